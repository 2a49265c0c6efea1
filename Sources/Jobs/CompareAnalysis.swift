import Analysis
import Foundation
import GPT2
import ResultsStore
import Support
import TensorCore

/// `lnlens compare`: the next-token distributions of an original model and the models compared
/// with it (`Divergence`), one run for all of them. The job's model is the original (site `m0`);
/// `others` are sites `m1`, `m2`, … in the order given (`runs.model_path` lists them all). Rows
/// per unit and predicting position p (0 … T − 2): quantities `ce` and `entropy` at every site,
/// `jsd` and `kl` (KL(original ‖ model)) at `m1`, …; site `input`, quantity `eot`, value 1 at the
/// positions p ≥ 1 that read `<|endoftext|>`. Summaries (scope the quantity, key the site and
/// the token kind: `m1` every position, `m1/first` position 0, `m1/eot` the EOT positions,
/// `m1/other` the rest): `mean`, `ci_low`, `ci_high` (the companion's bootstrap: 1,000 means of
/// resamples drawn by `RandomState(42)`, their 2.5th and 97.5th percentiles) and `n`.
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
                for k in t.ce.indices { add(k, p, StoreName.ce, t.ce[k]); add(k, p, StoreName.entropy, t.entropy[k]) }
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
        struct Key: Hashable { let quantity: String, site: String }
        struct Value { let unit: Int, position: Int, value: Double }
        var eots = Set<[Int]>(), values: [Key: [Value]] = [:]
        for r in rows {
            guard let p = r.position else { continue }
            if r.site == StoreName.inputSite, r.quantity == StoreName.eot { eots.insert([r.promptIndex, p]); continue }
            if quantities.contains(r.quantity) {
                values[Key(quantity: r.quantity, site: r.site), default: []].append(Value(unit: r.promptIndex, position: p, value: r.value))
            }
        }
        var groups: [(scope: String, key: String, values: [Double])] = []
        for key in values.keys.sorted(by: { ($0.quantity, $0.site) < ($1.quantity, $1.site) }) {
            let ordered = values[key]!.sorted { ($0.unit, $0.position) < ($1.unit, $1.position) }
            groups.append((key.quantity, key.site, ordered.map(\.value)))
            for k in kinds {
                let of = ordered.filter { kind(position: $0.position, eot: eots.contains([$0.unit, $0.position])) == k }
                if !of.isEmpty { groups.append((key.quantity, "\(key.site)/\(k)", of.map(\.value))) }
            }
        }
        let samples = groups.map(\.values)
        var intervals = [ConfidenceInterval](repeating: ConfidenceInterval(low: .nan, high: .nan), count: groups.count)
        intervals.withUnsafeMutableBufferPointer { out in
            let ob = UnsafeSendable(out.baseAddress!)
            DispatchQueue.concurrentPerform(iterations: groups.count) { i in
                ob.value[i] = Metrics.bootstrapMeanInterval(samples[i], resamples: bootstrapResamples)
            }
        }
        var out: [SummaryRow] = []
        for (g, ci) in zip(groups, intervals) {
            let n = Double(g.values.count)
            let stats: [(String, Double)] = [("mean", g.values.reduce(0, +) / n), ("ci_low", ci.low), ("ci_high", ci.high), ("n", n)]
            out += stats.map { SummaryRow(scope: g.scope, key: g.key, metric: $0.0, value: $0.1) }
        }
        return out
    }
}
