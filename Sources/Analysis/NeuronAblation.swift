import Foundation
import GPT2
import TensorCore

/// Mean-ablation of last-layer MLP neurons over a set of windows, as the companion's
/// `AblationAnalyzer` and `CumulativeAblation` do it: one pass over every window keeps the last
/// block's resid_post and the activations (`hook_post`) of the neurons to ablate, and sums every
/// neuron's activation over the scored positions (each position but a window's last, whose target
/// is the next token); once the means are known, each batch's logits are made again from its
/// resid_post (final LayerNorm and unembedding: the pass itself skips them) and give the
/// next-token loss and entropy of every scored position, nothing ablated, and of every ablation
/// asked for — the chosen neurons' `hook_post` set to their mean at every position — as a
/// rank-one change of those logits (`RankOneLogits`), not a new unembedding. So the pass and any
/// number of ablations cost about one forward pass.
public struct NeuronAblation: Sendable {
    /// Per-token values in the order the scored positions come: window by window, position 0 first.
    public struct TokenStats: Sendable, Equatable {
        public var loss: [Double] = []
        public var entropy: [Double] = []
        public init() {}
    }

    /// Windows of equal length run together, with their last block's resid_post and, per position,
    /// the activations of the ablated neurons (`RankOneLogits.neurons` order).
    struct Batch: Sendable {
        var tokens: [[Int]]
        var residPost: [Float]
        var acts: [Float]
    }

    public let model: GPT2Model
    /// Each neuron's mean `hook_post` over every scored position of every window.
    public private(set) var meanActivation: [Double]
    /// Loss and entropy of every scored position, nothing ablated.
    public private(set) var base = TokenStats()
    /// Loss and entropy of every scored position for each set of neurons asked for, mean-ablated together.
    public private(set) var ablated: [[Int]: TokenStats] = [:]

    /// The pass over `windows` (each at least 2 tokens), `batch` windows of equal length at a
    /// time, and the ablation of each set of `ablations` (last-layer neurons).
    public init(model: GPT2Model, windows: [[Int]], batch: Int, ablations: [[Int]] = []) throws {
        self.model = model
        let M = model.config.dMLP
        if let bad = ablations.joined().first(where: { $0 < 0 || $0 >= M }) { throw AnalysisError.neuronOutOfRange(neuron: bad, dMLP: M) }
        let neurons = Array(Set(ablations.joined())).sorted()
        var sums = [Double](repeating: 0, count: M), count = 0
        var batches: [Batch] = []
        for group in Self.batches(windows, size: batch) {
            batches.append(try Self.pass(model: model, group, keeping: neurons, sums: &sums))
            count += group.count * (group[0].count - 1)
        }
        meanActivation = sums.map { $0 / Double(max(1, count)) }
        let tail = RankOneLogits(model: model, neurons: neurons)
        let sets = Array(Set(ablations)).sorted { $0.lexicographicallyPrecedes($1) }
        for set in sets { ablated[set] = TokenStats() }
        for b in batches {
            let (plain, changed) = Self.stats(b, tail: tail, sets: sets, means: meanActivation)
            base.append(plain)
            for (set, stats) in zip(sets, changed) { ablated[set]!.append(stats) }
        }
    }

    /// The pass over one batch up to the last block's resid_post (no logits): that and the
    /// activations of `neurons`, with every neuron's activation at the scored positions added to `sums`.
    static func pass(model: GPT2Model, _ group: [[Int]], keeping neurons: [Int], sums: inout [Double]) throws -> Batch {
        let cfg = model.config, L = cfg.nLayers, M = cfg.dMLP, T = group[0].count
        let post = HookName(.mlpPost, layer: L - 1), resid = HookName(.residPost, layer: L - 1)
        let pass = try model.run(group, ForwardOptions(cache: [post, resid], logits: .none))
        let acts = pass.cache[post]!.data
        for b in 0..<group.count {
            for t in 0..<(T - 1) {
                let row = (b * T + t) * M
                for n in 0..<M { sums[n] += Double(acts[row + n]) }
            }
        }
        let kept = (0..<(group.count * T)).flatMap { r in neurons.map { acts[r * M + $0] } }
        return Batch(tokens: group, residPost: pass.cache[resid]!.data, acts: kept)
    }

    /// One batch's loss and entropy, nothing ablated and with each of `sets` ablated.
    static func stats(_ batch: Batch, tail: RankOneLogits, sets: [[Int]], means: [Double]) -> (TokenStats, [TokenStats]) {
        let T = batch.tokens[0].count, N = batch.tokens.count * T, V = tail.V, C = tail.C, K = tail.neurons.count
        var rows: [Int] = [], targets: [Int] = []
        for (b, w) in batch.tokens.enumerated() {
            for t in 0..<(T - 1) { rows.append(b * T + t); targets.append(w[t + 1]) }
        }
        var logits = [Float](repeating: 0, count: N * V), sigma = [Float](repeating: 0, count: N)
        tail.logits(x: batch.residPost, N: N, into: &logits, sigma: &sigma)
        let plain = nextTokenStats(logits: logits, rows: rows, targets: targets, V: V)
        let index = Dictionary(uniqueKeysWithValues: tail.neurons.enumerated().map { ($1, $0) })
        let changed = sets.map { set in
            let which = set.map { index[$0]! }
            return logits.withUnsafeBufferPointer { z in
                batch.residPost.withUnsafeBufferPointer { x in
                    let (z, x) = (UnsafeSendable(z.baseAddress!), UnsafeSendable(x.baseAddress!))
                    return nextTokenStats(rows: rows, targets: targets, V: V) { i, out in
                        let r = rows[i]
                        let deltas = which.map { j in (index: j, c: means[tail.neurons[j]] - Double(batch.acts[r * K + j])) }
                        tail.ablate(z: z.value + r * V, x: x.value + r * C, sigma: sigma[r], deltas: deltas, out: out)
                    }
                }
            }
        }
        return (plain, changed)
    }

    /// Consecutive windows of equal length, at most `size` at a time.
    static func batches(_ windows: [[Int]], size: Int) -> [[[Int]]] {
        var out: [[[Int]]] = []
        for w in windows {
            if let last = out.last, last.count < max(1, size), last[0].count == w.count { out[out.count - 1].append(w) } else { out.append([w]) }
        }
        return out
    }

    /// Per row of `logits (·, V)`: the cross-entropy of its target, `lse − z[target]`, and the
    /// entropy of its softmax, `−Σ p log p = log S − Σ e^{d} d / S` with d = z − max and S = Σ e^{d}
    /// (the companion's `−Σ p log(p + 1e-10)` differs by less than V · 1e-10).
    public static func nextTokenStats(logits: UnsafePointer<Float>, rows: [Int], targets: [Int], V: Int) -> TokenStats {
        let z = UnsafeSendable(logits)
        return nextTokenStats(rows: rows, targets: targets, V: V) { i, out in out.update(from: z.value + rows[i] * V, count: V) }
    }

    /// The same of rows that `row(i, out)` writes into `out (V)`, one per target, in parallel.
    static func nextTokenStats(rows: [Int], targets: [Int], V: Int, _ row: @escaping (Int, FloatPointer) -> Void) -> TokenStats {
        let R = targets.count
        var loss = [Double](repeating: 0, count: R), entropy = loss
        loss.withUnsafeMutableBufferPointer { lp in
            entropy.withUnsafeMutableBufferPointer { ep in
                let (lb, eb) = (UnsafeSendable(lp.baseAddress!), UnsafeSendable(ep.baseAddress!))
                parallelChunks(R, minimum: 2) { lo, hi in
                    var buffers = [Float](repeating: 0, count: 2 * V)
                    buffers.withUnsafeMutableBufferPointer { b in
                        let (z, e) = (b.baseAddress!, b.baseAddress! + V)
                        for i in lo..<hi {
                            row(i, z)
                            (lb.value[i], eb.value[i]) = lossAndEntropy(z, target: targets[i], V: V, exps: e)
                        }
                    }
                }
            }
        }
        var out = TokenStats()
        (out.loss, out.entropy) = (loss, entropy)
        return out
    }

    /// One row's cross-entropy of `target` and entropy, `exps (V)` as scratch.
    static func lossAndEntropy(_ row: ConstFloatPointer, target: Int, V: Int, exps e: FloatPointer) -> (Double, Double) {
        let m = maxFloats(row, count: V)
        let s = expShifted(out: e, x: row, shift: m, count: V)
        var weighted = 0.0, block: Float = 0
        for v in 0..<V {
            block += e[v] * (row[v] - m)
            if v & 511 == 511 { weighted += Double(block); block = 0 }
        }
        weighted += Double(block)
        let logS = log(s)
        return (Double(m) + logS - Double(row[target]), logS - weighted / s)
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
