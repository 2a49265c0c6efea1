import Analysis
import Foundation
import GPT2
import ResultsStore
import Support
import TensorCore

/// `lnlens compare`: the next-token distributions of an original model and the models compared
/// with it (`Divergence`), one run for all of them. The job's model is the original (site `m0`);
/// `others` are sites `m1`, `m2`, … in the order given (`runs.model_path` lists them all). Rows
/// per unit and predicting position p (0 … T − 2): quantities `ce`, `entropy`, `max_prob` and
/// `correct` (1 when the target is a top token) at every site, `jsd` and `kl` (KL(original ‖
/// model)) at `m1`, …; site `input`, quantity `eot`, value 1 at the
/// positions p ≥ 1 that read `<|endoftext|>`. Summaries (scope the quantity, key the site and
/// the token kind: `m1` every position, `m1/first` position 0, `m1/eot` the EOT positions,
/// `m1/other` the rest): `mean`, `ci_low`, `ci_high` (the companion's bootstrap: 1,000 means of
/// resamples drawn by `RandomState(42)`, their 2.5th and 97.5th percentiles) and `n`; scope `ece`
/// (the companion's calibration error, 10 bins), metrics `value`, `ci_low`, `ci_high`, `n`.
public struct CompareAnalysis: SequenceAnalysis {
    public static let command = StoreName.compareCommand
    /// The companion's `bootstrap_samples` in the run that wrote its `ci_statistics.csv`.
    public static let bootstrapResamples = 1000
    public static let quantities = [StoreName.ce, StoreName.entropy, StoreName.jsd, StoreName.kl]
    public static let kinds = ["first", "eot", "other"]
    /// The models compared with the original (the job's model), in order.
    public var others: [GPT2Model] = []
    /// The end-of-text id (a position reading it is of the kind `eot`).
    public var eot = 50256

    public init(options: AnalysisOptions) {}

    /// The site of model k (0: the original).
    public static func site(_ k: Int) -> String { "m\(k)" }

    public func rows(model: GPT2Model, batch: [AnalysisUnit]) throws -> [ResultRow] {
        let measured = try Divergence.measure(models: [model] + others, tokens: batch.map(\.tokens))
        var out: [ResultRow] = []
        for (unit, positions) in zip(batch, measured) {
            func add(_ k: Int, _ p: Int, _ quantity: String, _ value: Double) {
                out.append(ResultRow(promptIndex: unit.index, site: Self.site(k), position: p, quantity: quantity, value: value))
            }
            for (p, t) in positions.enumerated() {
                for k in t.ce.indices {
                    add(k, p, StoreName.ce, t.ce[k]); add(k, p, StoreName.entropy, t.entropy[k])
                    add(k, p, StoreName.maxProb, t.maxProb[k]); add(k, p, StoreName.correct, t.correct[k])
                }
                for k in t.jsd.indices { add(k + 1, p, StoreName.jsd, t.jsd[k]); add(k + 1, p, StoreName.kl, t.kl[k]) }
            }
            for p in 1..<max(1, unit.tokens.count - 1) where unit.tokens[p] == eot {
                out.append(ResultRow(promptIndex: unit.index, site: StoreName.inputSite, position: p, quantity: StoreName.eot, value: 1))
            }
        }
        return out
    }

    public func cacheBytes(T: Int, config: GPT2Config) -> Int { Divergence.cacheBytes(T: T, config: config, models: 1 + others.count) }

    /// A token's kind: `first` (position 0), `eot` (reads `<|endoftext|>`), `other`.
    static func kind(position: Int, eot: Bool) -> String { position == 0 ? "first" : eot ? "eot" : "other" }

    public static func summaries(from rows: [ResultRow]) -> [SummaryRow] {
        let tokens = Tokens(rows)
        var groups: [Group] = []
        for key in tokens.values.keys.sorted(by: { ($0.quantity, $0.site) < ($1.quantity, $1.site) }) where quantities.contains(key.quantity) {
            for (suffix, order) in tokens.kinds(key) { groups.append(Group(scope: key.quantity, key: key.site + suffix, order: order, ece: false)) }
        }
        for site in Set(tokens.values.keys.map(\.site)).sorted() {
            let key = Tokens.Key(quantity: StoreName.maxProb, site: site)
            guard tokens.values[key] != nil, tokens.values[Tokens.Key(quantity: StoreName.correct, site: site)] != nil else { continue }
            for (suffix, order) in tokens.kinds(key) { groups.append(Group(scope: StoreName.ece, key: site + suffix, order: order, ece: true)) }
        }
        let all = groups
        var out = [[SummaryRow]](repeating: [], count: all.count)
        out.withUnsafeMutableBufferPointer { buffer in
            let ob = UnsafeSendable(buffer.baseAddress!)
            DispatchQueue.concurrentPerform(iterations: all.count) { ob.value[$0] = all[$0].summaries(tokens) }
        }
        return out.flatMap { $0 }
    }

    /// Every token's values by (quantity, site), in the order (unit, position), and the EOT positions.
    struct Tokens {
        struct Key: Hashable { let quantity: String, site: String }
        var values: [Key: [(unit: Int, position: Int, value: Double)]] = [:]
        var eots = Set<[Int]>()

        init(_ rows: [ResultRow]) {
            for r in rows {
                guard let p = r.position else { continue }
                if r.site == StoreName.inputSite { if r.quantity == StoreName.eot { eots.insert([r.promptIndex, p]) }; continue }
                values[Key(quantity: r.quantity, site: r.site), default: []].append((r.promptIndex, p, r.value))
            }
            for k in values.keys { values[k]!.sort { ($0.unit, $0.position) < ($1.unit, $1.position) } }
        }

        /// The tokens of `key` (indices into its values): all (suffix ""), then each kind present.
        func kinds(_ key: Key) -> [(String, [Int])] {
            let v = values[key]!
            var out = [("", Array(v.indices))]
            for k in CompareAnalysis.kinds {
                let of = v.indices.filter { CompareAnalysis.kind(position: v[$0].position, eot: eots.contains([v[$0].unit, v[$0].position])) == k }
                if !of.isEmpty { out.append(("/" + k, of)) }
            }
            return out
        }
    }

    /// One summary: a quantity's mean over some tokens, or (`ece`) a site's calibration error.
    struct Group: Sendable {
        let scope: String, key: String, order: [Int], ece: Bool

        func summaries(_ tokens: Tokens) -> [SummaryRow] {
            let site = String(key.prefix { $0 != "/" })
            let n = Double(order.count)
            let point: Double, ci: ConfidenceInterval
            if ece {
                let confidence = order.map { tokens.values[Tokens.Key(quantity: StoreName.maxProb, site: site)]![$0].value }
                let correct = order.map { tokens.values[Tokens.Key(quantity: StoreName.correct, site: site)]![$0].value }
                point = Metrics.calibrationError(confidence: confidence, correct: correct)
                ci = Metrics.companionBootstrap(count: order.count, resamples: bootstrapResamples) {
                    Metrics.calibrationError(confidence: confidence, correct: correct, indices: $0)
                }
            } else {
                let values = order.map { tokens.values[Tokens.Key(quantity: scope, site: site)]![$0].value }
                (point, ci) = (values.reduce(0, +) / n, Metrics.bootstrapMeanInterval(values, resamples: bootstrapResamples))
            }
            let stats: [(String, Double)] = [(ece ? "value" : "mean", point), ("ci_low", ci.low), ("ci_high", ci.high), ("n", n)]
            return stats.map { SummaryRow(scope: scope, key: key, metric: $0.0, value: $0.1) }
        }
    }
}
