import Foundation
import GPT2
import TensorCore

/// A model's mean next-token cross-entropy on a text, with a 95% confidence interval.
public struct EvalResult: Sendable, Equatable {
    /// Windows of `context` tokens the text was cut into (the tail that does not fill one is dropped).
    public var windows: Int
    /// Next-token predictions scored: windows · (context − 1).
    public var predictions: Int
    /// Mean cross-entropy in nats over every prediction.
    public var loss: Double
    /// mean ± 1.96 · (standard deviation of the windows' losses) / √windows; equal to the loss
    /// when there is one window.
    public var ciLow: Double
    public var ciHigh: Double
}

public enum Evaluation {
    /// Throws the error `loss` would for this model, text and context, without running anything.
    public static func validate(model: GPT2Model, text: TokenCorpus, context: Int) throws {
        guard context >= 2 else { throw TrainingError.badOption(option: "--context", reason: "must be at least 2") }
        guard context <= model.config.nCtx else {
            throw TrainingError.badOption(option: "--context", reason: "\(context) is longer than the model's context (n_positions \(model.config.nCtx)); use at most \(model.config.nCtx)")
        }
        guard text.blockCount(seqLen: context) >= 1 else {
            throw TrainingError.textTooShort(file: text.path, tokens: text.tokens.count, context: context)
        }
    }

    /// Scores `model` on `text` in non-overlapping windows of `context` tokens, `batch` windows per
    /// pass; each window predicts its tokens 2 … context from the ones before, as transformers'
    /// loss with `labels=input_ids` does; `progress(done, total)` after each pass.
    public static func loss(model: GPT2Model, text: TokenCorpus, context: Int, batch: Int = 8,
                            progress: (Int, Int) -> Void = { _, _ in }) throws -> EvalResult {
        try validate(model: model, text: text, context: context)
        let n = text.blockCount(seqLen: context)
        var losses: [Double] = []
        var start = 0
        // One set of buffers for every pass: the logits alone are batch × context × vocab floats,
        // which mapped afresh and page-faulted in each pass cost more than the forward itself.
        var options = ForwardOptions(logits: .all)
        options.arenas = ArenaPool()
        while start < n {
            let windows = (start ..< min(n, start + batch)).map { text.block($0, seqLen: context) }
            let pass = try model.run(windows, options)
            losses += crossEntropy(logits: pass.logits, tokens: windows, V: model.config.dVocab).perPrompt
            start += windows.count
            progress(start, n)
        }
        let mean = losses.reduce(0, +) / Double(n)
        let variance = n > 1 ? losses.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n - 1) : 0
        let half = 1.96 * (variance / Double(n)).squareRoot()
        return EvalResult(windows: n, predictions: n * (context - 1), loss: mean, ciLow: mean - half, ciHigh: mean + half)
    }
}
