import Foundation
import GPT2
import TensorCore

/// Mean-ablation of last-layer MLP neurons over a set of windows, as the companion's
/// `AblationAnalyzer` and `CumulativeAblation` do it: one pass over every window keeps the last
/// block's resid_mid, the next-token loss and entropy of every scored position (each position but
/// a window's last, whose target is the next token), and the mean of every neuron's
/// `hook_post` over those positions; an ablation sets the chosen neurons' `hook_post` to that mean
/// at every position (an `Intervention` on `blocks.L-1.mlp.hook_post`) and reruns only what it
/// changes, the last block's MLP, the final LayerNorm and the unembedding (`runFromResidMid`).
public struct NeuronAblation: Sendable {
    /// Per-token values in the order the scored positions come: window by window, position 0 first.
    public struct TokenStats: Sendable, Equatable {
        public var loss: [Double] = []
        public var entropy: [Double] = []
        public init() {}
    }

    /// Windows of equal length run together, with their last block's resid_mid.
    struct Batch: Sendable {
        var tokens: [[Int]]
        var residMid: [Float]
    }

    public let model: GPT2Model
    var batches: [Batch] = []
    /// Arenas recycled from pass to pass (each holds a batch's logits).
    let arenas = ArenaPool()
    /// Each neuron's mean `hook_post` over every scored position of every window.
    public private(set) var meanActivation: [Double]
    /// Loss and entropy of every scored position, nothing ablated.
    public private(set) var base = TokenStats()

    /// The pass over `windows` (each at least 2 tokens), `batch` windows of equal length at a time.
    public init(model: GPT2Model, windows: [[Int]], batch: Int) throws {
        self.model = model
        let cfg = model.config, L = cfg.nLayers, M = cfg.dMLP
        let post = HookName(.mlpPost, layer: L - 1), mid = HookName(.residMid, layer: L - 1)
        var sums = [Double](repeating: 0, count: M), count = 0
        for group in Self.batches(windows, size: batch) {
            var options = ForwardOptions(cache: [post, mid], logits: .all)
            options.arenas = arenas
            let pass = try model.run(group, options)
            let T = group[0].count
            let acts = pass.cache[post]!.data
            for b in 0..<group.count {
                for t in 0..<(T - 1) {
                    let row = (b * T + t) * M
                    for n in 0..<M { sums[n] += Double(acts[row + n]) }
                }
            }
            count += group.count * (T - 1)
            base.append(Self.stats(pass, tokens: group, V: cfg.dVocab))
            batches.append(Batch(tokens: group, residMid: pass.cache[mid]!.data))
        }
        meanActivation = sums.map { $0 / Double(max(1, count)) }
    }

    /// Loss and entropy of every scored position with `neurons` mean-ablated together.
    public func ablated(_ neurons: [Int]) throws -> TokenStats {
        let cfg = model.config, M = cfg.dMLP
        if let bad = neurons.first(where: { $0 < 0 || $0 >= M }) { throw AnalysisError.neuronOutOfRange(neuron: bad, dMLP: M) }
        let means = neurons.map { Float(meanActivation[$0]) }
        let ablation = Intervention(HookName(.mlpPost, layer: cfg.nLayers - 1), .custom { t in
            for row in stride(from: 0, to: t.data.count, by: M) {
                for (n, mean) in zip(neurons, means) { t.data[row + n] = mean }
            }
        })
        var out = TokenStats()
        var options = ForwardOptions(interventions: [ablation], logits: .all)
        options.arenas = arenas
        for batch in batches {
            let pass = try model.runFromResidMid(batch.tokens, layer: cfg.nLayers - 1, residMid: batch.residMid, options)
            out.append(Self.stats(pass, tokens: batch.tokens, V: cfg.dVocab))
        }
        return out
    }

    /// Consecutive windows of equal length, at most `size` at a time.
    static func batches(_ windows: [[Int]], size: Int) -> [[[Int]]] {
        var out: [[[Int]]] = []
        for w in windows {
            if let last = out.last, last.count < max(1, size), last[0].count == w.count { out[out.count - 1].append(w) } else { out.append([w]) }
        }
        return out
    }

    /// The scored positions' loss and entropy from a pass with every logit.
    static func stats(_ pass: ForwardPass, tokens: [[Int]], V: Int) -> TokenStats {
        let T = pass.T
        var rows: [Int] = [], targets: [Int] = []
        for (b, w) in tokens.enumerated() {
            for t in 0..<(T - 1) { rows.append(b * T + t); targets.append(w[t + 1]) }
        }
        return nextTokenStats(logits: pass.logits, rows: rows, targets: targets, V: V)
    }

    /// Per row of `logits (·, V)`: the cross-entropy of its target, `lse − z[target]`, and the
    /// entropy of its softmax, `−Σ p log p = log S − Σ e^{d} d / S` with d = z − max and S = Σ e^{d}
    /// (the companion's `−Σ p log(p + 1e-10)` differs by less than V · 1e-10).
    public static func nextTokenStats(logits: UnsafePointer<Float>, rows: [Int], targets: [Int], V: Int) -> TokenStats {
        let R = rows.count
        var loss = [Double](repeating: 0, count: R), entropy = loss
        loss.withUnsafeMutableBufferPointer { lp in
            entropy.withUnsafeMutableBufferPointer { ep in
                let (lb, eb, z) = (UnsafeSendable(lp.baseAddress!), UnsafeSendable(ep.baseAddress!), UnsafeSendable(logits))
                parallelChunks(R, minimum: 2) { lo, hi in
                    var exps = [Float](repeating: 0, count: V)
                    exps.withUnsafeMutableBufferPointer { e in
                        for i in lo..<hi {
                            let row = z.value + rows[i] * V
                            let m = maxFloats(row, count: V)
                            let s = expShifted(out: e.baseAddress!, x: row, shift: m, count: V)
                            var weighted = 0.0, block: Float = 0
                            for v in 0..<V {
                                block += e[v] * (row[v] - m)
                                if v & 511 == 511 { weighted += Double(block); block = 0 }
                            }
                            weighted += Double(block)
                            let logS = log(s)
                            lb.value[i] = Double(m) + logS - Double(row[targets[i]])
                            eb.value[i] = logS - weighted / s
                        }
                    }
                }
            }
        }
        var out = TokenStats()
        (out.loss, out.entropy) = (loss, entropy)
        return out
    }
}

extension NeuronAblation.TokenStats {
    mutating func append(_ other: Self) {
        loss += other.loss
        entropy += other.entropy
    }

    /// Mean and standard deviation (n − 1, as torch's `std`) of `values`.
    public static func moments(_ values: [Double]) -> (mean: Double, sd: Double) {
        let n = Double(values.count)
        let mean = values.reduce(0, +) / max(1, n)
        let ss = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
        return (mean, n > 1 ? (ss / (n - 1)).squareRoot() : .nan)
    }
}
