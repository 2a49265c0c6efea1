import Distributed
import Foundation
import GPT2
import TensorCore

/// One window's mean next-token cross-entropy in nats: `window` is its index in the whole text.
public struct WindowLoss: Sendable, Equatable {
    public var window: Int
    public var loss: Double

    public init(window: Int, loss: Double) {
        self.window = window
        self.loss = loss
    }
}

/// A model's mean next-token cross-entropy on a text (or on a shard's windows of it), with a 95%
/// confidence interval.
public struct EvalResult: Sendable, Equatable {
    /// Each window scored, in window order.
    public var windowLosses: [WindowLoss]
    /// Next-token predictions scored: windows · (context − 1).
    public var predictions: Int
    /// Mean cross-entropy in nats over every prediction.
    public var loss: Double
    /// mean ± 1.96 · (standard deviation of the windows' losses) / √windows; equal to the loss
    /// when there is one window.
    public var ciLow: Double
    public var ciHigh: Double

    /// The summary of `windowLosses` (in window order) of windows of `context` tokens.
    public init(windowLosses: [WindowLoss], context: Int) {
        let summary = Evaluation.summary(losses: windowLosses.map(\.loss))
        self.windowLosses = windowLosses
        self.predictions = windowLosses.count * (context - 1)
        self.loss = summary.loss
        self.ciLow = summary.ciLow
        self.ciHigh = summary.ciHigh
    }

    /// Windows scored.
    public var windows: Int { windowLosses.count }
}

public enum Evaluation {
    /// Throws the error `loss` would for this model, text and context, without running anything.
    public static func validate(model: GPT2Model, text: TokenCorpus, context: Int) throws {
        guard context >= 2 else { throw TrainingError.badOption(option: "--context", reason: "must be at least 2") }
        guard context <= model.config.nCtx else {
            throw TrainingError.badOption(option: "--context", reason: "\(context) is longer than the model's context (n_positions \(model.config.nCtx)); use at most \(model.config.nCtx)")
        }
        try text.checkWindow(context, option: "--context")
        guard text.blockCount(seqLen: context) >= 1 else {
            throw TrainingError.textTooShort(file: text.path, tokens: text.tokenCount, context: context)
        }
    }

    /// Scores `model` on `text` cut into non-overlapping windows of `context` tokens: the windows
    /// with the indices `windows` (ascending; nil: every window), `batch` of them per pass. Each
    /// window predicts its tokens 2 … context from the ones before, as transformers' loss with
    /// `labels=input_ids` does; `progress(done, total)` after each pass.
    public static func loss(model: GPT2Model, text: TokenCorpus, context: Int, windows: [Int]? = nil, batch: Int = 8,
                            progress: (Int, Int) -> Void = { _, _ in }) throws -> EvalResult {
        try validate(model: model, text: text, context: context)
        let selected = windows ?? Array(0..<text.blockCount(seqLen: context))
        var losses: [WindowLoss] = []
        // One set of buffers for every pass: the logits alone are batch × context × vocab floats,
        // which mapped afresh and page-faulted in each pass cost more than the forward itself.
        var options = ForwardOptions(logits: .all)
        options.arenas = ArenaPool()
        for start in stride(from: 0, to: selected.count, by: batch) {
            let indices = selected[start..<min(selected.count, start + batch)]
            let tokens = indices.map { text.block($0, seqLen: context) }
            let pass = try model.run(tokens, options)
            let perWindow = crossEntropy(logits: pass.logits, tokens: tokens, V: model.config.dVocab).perPrompt
            losses += zip(indices, perWindow).map { WindowLoss(window: $0, loss: $1) }
            progress(losses.count, selected.count)
        }
        return EvalResult(windowLosses: losses, context: context)
    }

    /// The passes (runs of `batch` windows from the first of `count`) that rank `rank` of `ranks`
    /// scores, as a range of windows: a contiguous share of the passes, counts differing by at most
    /// one, so each rank's passes hold exactly the windows one process puts in a pass.
    public static func share(of count: Int, batch: Int, rank: Int, ranks: Int) -> Range<Int> {
        let passes = (count + batch - 1) / batch
        let (lo, hi) = (rank * passes / ranks, (rank + 1) * passes / ranks)
        return min(count, lo * batch) ..< min(count, hi * batch)
    }

    /// Every model's loss on each of `windows` (per model, in the order of `windows`), the passes
    /// split over the ranks of `world` (`share`) and the losses gathered to every rank by one sum
    /// of a zeroed buffer (x + 0 is x: the gathered numbers are the ranks' own bits). On one process
    /// it is `loss` model after model. `progress(model, done)` after each pass counts this rank's
    /// windows of that model scored.
    public static func losses(models: [GPT2Model], text: TokenCorpus, context: Int, windows: [Int], batch: Int,
                              world: Communicator = .single, progress: (Int, Int) -> Void = { _, _ in }) throws -> [[Double]] {
        let n = windows.count
        let mine = share(of: n, batch: batch, rank: world.rank, ranks: world.size)
        var gathered = [Double](repeating: 0, count: models.count * n)
        for (m, model) in models.enumerated() {
            let r = try loss(model: model, text: text, context: context, windows: Array(windows[mine]), batch: batch) { d, _ in progress(m, d) }
            for (i, w) in r.windowLosses.enumerated() { gathered[m * n + mine.lowerBound + i] = w.loss }
        }
        try world.allreduceSum(&gathered)
        return models.indices.map { Array(gathered[$0 * n ..< ($0 + 1) * n]) }
    }

    /// The mean of per-window losses with its 95% interval, mean ± 1.96 · sd / √n (sd the sample
    /// standard deviation; the interval is the mean itself when n = 1). Sums run in the order
    /// given — window order — so a run and the merge of its shards give the same doubles.
    public static func summary(losses: [Double]) -> (loss: Double, ciLow: Double, ciHigh: Double) {
        let n = losses.count
        let mean = losses.reduce(0, +) / Double(n)
        let variance = n > 1 ? losses.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n - 1) : 0
        let half = 1.96 * (variance / Double(n)).squareRoot()
        return (mean, mean - half, mean + half)
    }
}
