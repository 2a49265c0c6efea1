import Analysis
import Foundation
import GPT2
import ResultsStore
import Support

/// `lnlens sinks`: per unit, every head's attention-sink rate (`results`: site `pattern`, layer,
/// head, quantity `sink_rate`). Summaries (scope `sink_rate`): over units, the mean, the 95%
/// percentile interval (`ci_low`, `ci_high`: 2.5th and 97.5th percentiles, as the companion's
/// `sink_rate.py` main()), `median`, `q25`, `q75` and `n`, of each unit's rate averaged over every
/// head (key `all`: the companion's `calculate_sink_rate` of the unit), over one layer's heads
/// (key `L3`) and of one head (key `L3H2`).
public struct SinkAnalysis: SequenceAnalysis {
    public static let command = StoreName.sinksCommand
    public var eps: Double

    public init(options: AnalysisOptions) { eps = options.computation.eps ?? SinkRate.defaultEps }

    public func rows(model: GPT2Model, batch: [AnalysisUnit]) throws -> [ResultRow] {
        let NH = model.config.nHeads
        let rates = try SinkRate.rates(model: model, tokens: batch.map(\.tokens), eps: eps)
        return zip(batch, rates).flatMap { unit, r in
            r.indices.map { ResultRow(promptIndex: unit.index, site: StoreName.patternSite, layer: $0 / NH, head: $0 % NH,
                                      quantity: StoreName.sinkRate, value: r[$0]) }
        }
    }

    public func cacheBytes(T: Int, config: GPT2Config) -> Int { SinkRate.cacheBytes(T: T, config: config) }

    public static func summaries(from rows: [ResultRow]) -> [SummaryRow] {
        var perHead: [String: [Int: Double]] = [:], perLayer: [String: [Int: [Double]]] = [:], all: [Int: [Double]] = [:]
        for r in rows where r.quantity == StoreName.sinkRate {
            guard let l = r.layer, let h = r.head else { continue }
            perHead["L\(l)H\(h)", default: [:]][r.promptIndex] = r.value
            perLayer["L\(l)", default: [:]][r.promptIndex, default: []].append(r.value)
            all[r.promptIndex, default: []].append(r.value)
        }
        func mean(_ v: [Double]) -> Double { v.reduce(0, +) / Double(v.count) }
        var groups: [(String, [Double])] = [("all", all.keys.sorted().map { mean(all[$0]!) })]
        groups += SummaryKeyOrder.sorted(Array(perLayer.keys)).map { k in (k, perLayer[k]!.keys.sorted().map { mean(perLayer[k]![$0]!) }) }
        groups += SummaryKeyOrder.sorted(Array(perHead.keys)).map { k in (k, perHead[k]!.keys.sorted().map { perHead[k]![$0]! }) }
        return groups.flatMap { key, values in
            distribution(values).map { SummaryRow(scope: StoreName.sinkRate, key: key, metric: $0.0, value: $0.1) }
        }
    }

    /// The statistics `sink_rate.py` prints of its values: mean, 95% percentile interval,
    /// quartiles and median (numpy's linear interpolation), and how many.
    static func distribution(_ values: [Double]) -> [(String, Double)] {
        let s = values.sorted()
        return [("mean", values.reduce(0, +) / Double(max(1, values.count))),
                ("ci_low", Metrics.quantile(sorted: s, 0.025)), ("ci_high", Metrics.quantile(sorted: s, 0.975)),
                ("median", Metrics.quantile(sorted: s, 0.5)), ("q25", Metrics.quantile(sorted: s, 0.25)),
                ("q75", Metrics.quantile(sorted: s, 0.75)), ("n", Double(values.count))]
    }
}

/// `lnlens norms`: per unit and hook (`ResidualNorms.hooks`; site the hook's short name, with
/// its layer), for each measure — `norm`, and for each pair of consecutive hooks, named by the
/// second, `norm_ratio` and `cosine` — the value at position 0 (position 0, quantity the measure)
/// and the mean and mean square over positions 1 … T − 1 (position NULL, quantities
/// `MEASURE_rest_mean`, `MEASURE_rest_sq_mean`). Summaries (scope the measure, key the hook's
/// TransformerLens name): `first_mean`, `first_sd` over the units' position 0, `rest_mean`,
/// `rest_sd` over every other position of every unit (the companion's `plot_norms` and its kin),
/// and `n` (units).
public struct NormAnalysis: SequenceAnalysis {
    public static let command = StoreName.normsCommand
    public static let measures = [StoreName.norm, StoreName.normRatio, StoreName.cosine]

    public init(options: AnalysisOptions) {}

    public func rows(model: GPT2Model, batch: [AnalysisUnit]) throws -> [ResultRow] {
        let hooks = ResidualNorms.hooks(nLayers: model.config.nLayers)
        let measured = try ResidualNorms.measure(model: model, tokens: batch.map(\.tokens))
        var out: [ResultRow] = []
        for (unit, m) in zip(batch, measured) {
            func add(_ measure: String, _ hook: HookName, _ p: ResidualNorms.Profile) {
                let site = hook.point.shortName
                out.append(ResultRow(promptIndex: unit.index, site: site, layer: hook.layer, position: 0, quantity: measure, value: p.first))
                guard p.restCount > 0 else { return }
                out.append(ResultRow(promptIndex: unit.index, site: site, layer: hook.layer, quantity: measure + "_rest_mean", value: p.restMean))
                out.append(ResultRow(promptIndex: unit.index, site: site, layer: hook.layer, quantity: measure + "_rest_sq_mean",
                                     value: p.restSquareMean))
            }
            for (hook, p) in zip(hooks, m.norms) { add(StoreName.norm, hook, p) }
            for (hook, p) in zip(hooks.dropFirst(), m.ratios) { add(StoreName.normRatio, hook, p) }
            for (hook, p) in zip(hooks.dropFirst(), m.cosines) { add(StoreName.cosine, hook, p) }
        }
        return out
    }

    public func cacheBytes(T: Int, config: GPT2Config) -> Int { ResidualNorms.cacheBytes(T: T, config: config) }

    public static func summaries(from rows: [ResultRow]) -> [SummaryRow] {
        let lengths = Dictionary(rows.filter { $0.site == StoreName.inputSite }.map { ($0.promptIndex, Int($0.value)) },
                                 uniquingKeysWith: { a, _ in a })
        typealias Key = NormKey
        var first: [Key: [Int: Double]] = [:], restMean: [Key: [Int: Double]] = [:], restSq: [Key: [Int: Double]] = [:]
        for r in rows {
            for m in measures {
                let key = Key(measure: m, site: r.site, layer: r.layer)
                if r.quantity == m && r.position == 0 { first[key, default: [:]][r.promptIndex] = r.value }
                if r.quantity == m + "_rest_mean" { restMean[key, default: [:]][r.promptIndex] = r.value }
                if r.quantity == m + "_rest_sq_mean" { restSq[key, default: [:]][r.promptIndex] = r.value }
            }
        }
        var out: [SummaryRow] = []
        for key in first.keys.sorted(by: { $0.measure != $1.measure ? $0.measure < $1.measure : $0.order.lexicographicallyPrecedes($1.order) }) {
            guard let hook = HookName(parsing: key.layer.map { "\(key.site).\($0)" } ?? key.site) else { continue }
            let f = first[key]!.keys.sorted().map { (count: 1, mean: first[key]![$0]!, squareMean: first[key]![$0]! * first[key]![$0]!) }
            let rest = (restMean[key] ?? [:]).keys.sorted().compactMap { i -> (count: Int, mean: Double, squareMean: Double)? in
                guard let sq = restSq[key]?[i], let n = lengths[i] else { return nil }
                return (n - 1, restMean[key]![i]!, sq)
            }
            let a = PooledMoments.combine(f), b = PooledMoments.combine(rest)
            for (metric, value) in [("first_mean", a.mean), ("first_sd", a.sd), ("rest_mean", b.mean), ("rest_sd", b.sd),
                                    ("n", Double(a.count))] where value.isFinite {
                out.append(SummaryRow(scope: key.measure, key: hook.description, metric: metric, value: value))
            }
        }
        return out
    }

}

/// One measure at one hook of `NormAnalysis`'s rows.
struct NormKey: Hashable {
    let measure: String, site: String, layer: Int?

    /// Hooks in the companion's order.
    var order: [Int] {
        switch site {
        case "embed": [0, 0, 0]
        case "pos_embed": [0, 0, 1]
        case "resid_mid": [1, layer ?? 0, 0]
        case "resid_post": [1, layer ?? 0, 1]
        default: [2, 0, 0]
        }
    }
}

/// `lnlens lens`: per unit and residual read (site `resid_pre`, `resid_mid` or `resid_post`, with
/// its layer), the means over the unit's targets — a prompt's answer at its last position, or a
/// window's every next token — of the target's `prob`, `rank`, `top1` and `kl` (KL(final ‖ this
/// residual), nats) under `LogitLens`. Summaries (scope `lens`, key TransformerLens's label
/// `0_pre`, `0_mid`, …, `final_post`): the mean of each over the units, `rank_median`, and `n`.
public struct LensAnalysis: SequenceAnalysis {
    public static let command = StoreName.lensCommand
    public static let quantities = [StoreName.prob, StoreName.rank, StoreName.top1, StoreName.kl]
    public var inclMid: Bool
    /// Windows: only each window's last next token (position T − 2) is scored, not every position.
    public var lastOnly: Bool

    public init(options: AnalysisOptions) {
        inclMid = options.computation.inclMid ?? false
        lastOnly = options.computation.positions == "last"
    }

    public func rows(model: GPT2Model, batch: [AnalysisUnit]) throws -> [ResultRow] {
        let targets = batch.map { u -> [LogitLens.Target] in
            if let answer = u.answerID { return [LogitLens.Target(position: u.tokens.count - 1, token: answer)] }
            return (lastOnly ? (u.tokens.count - 2)..<(u.tokens.count - 1) : 0..<(u.tokens.count - 1))
                .map { LogitLens.Target(position: $0, token: u.tokens[$0 + 1]) }
        }
        let sites = LogitLens.sites(nLayers: model.config.nLayers, inclMid: inclMid)
        let measured = try LogitLens.measure(model: model, tokens: batch.map(\.tokens), targets: targets, inclMid: inclMid)
        return zip(batch, measured).flatMap { unit, perSite in
            zip(sites, perSite).flatMap { site, m in
                zip(Self.quantities, [m.prob, m.rank, m.top1, m.kl]).map { q, v in
                    ResultRow(promptIndex: unit.index, site: site.point.shortName, layer: site.layer, quantity: q, value: v)
                }
            }
        }
    }

    public func cacheBytes(T: Int, config: GPT2Config) -> Int {
        LogitLens.cacheBytes(T: T, config: config, inclMid: inclMid) + 3 * T * config.dVocab * MemoryLayout<Float>.stride
    }

    public static func summaries(from rows: [ResultRow]) -> [SummaryRow] {
        struct Key: Hashable { let site: String, layer: Int }
        var values: [Key: [String: [Int: Double]]] = [:]
        for r in rows where quantities.contains(r.quantity) {
            guard let l = r.layer else { continue }
            values[Key(site: r.site, layer: l), default: [:]][r.quantity, default: [:]][r.promptIndex] = r.value
        }
        let last = values.keys.filter { $0.site == HookName.Point.residPost.shortName }.map(\.layer).max()
        func order(_ k: Key) -> (Int, Int) { (k.site == HookName.Point.residPost.shortName ? Int.max : k.layer, k.site == "resid_mid" ? 1 : 0) }
        return values.keys.sorted { order($0) < order($1) }.flatMap { key -> [SummaryRow] in
            guard let point = HookName.Point.allCases.first(where: { $0.shortName == key.site }), key.layer <= (last ?? key.layer) else { return [] }
            let label = LogitLens.label(HookName(point, layer: key.layer), nLayers: key.layer + 1)
            var out = quantities.compactMap { q -> SummaryRow? in
                guard let v = values[key]![q], !v.isEmpty else { return nil }
                return SummaryRow(scope: StoreName.scopeLens, key: label, metric: q, value: v.keys.sorted().map { v[$0]! }.reduce(0, +) / Double(v.count))
            }
            if let ranks = values[key]![StoreName.rank] {
                out.append(SummaryRow(scope: StoreName.scopeLens, key: label, metric: "rank_median",
                                      value: Metrics.quantile(sorted: ranks.values.sorted(), 0.5)))
                out.append(SummaryRow(scope: StoreName.scopeLens, key: label, metric: "n", value: Double(ranks.count)))
            }
            return out
        }
    }
}

/// Summary keys of the one-pass analyses in reading order: hooks in computation order
/// (`hook_embed` … `ln_final.hook_normalized`), lens labels by layer (`0_pre`, `0_mid`, `1_pre`,
/// …, `final_post`), `all` then layers then heads; anything else after, as given.
public enum SummaryKeyOrder {
    public static func sorted(_ keys: [String]) -> [String] {
        keys.enumerated().sorted { before($0.element, $1.element) ?? ($0.offset < $1.offset) }.map(\.element)
    }

    /// Whether `a` reads before `b`; nil when neither does.
    static func before(_ a: String, _ b: String) -> Bool? {
        if let x = hook(a), let y = hook(b) { return x == y ? nil : x < y }
        let (x, y) = (rank(a), rank(b))
        return x == y ? nil : x.lexicographicallyPrecedes(y)
    }

    static func hook(_ key: String) -> HookName? { key.contains("hook_") ? HookName(parsing: key) : nil }

    static func rank(_ key: String) -> [Int] {
        if hook(key) != nil { return [0] }
        if key == "final_post" { return [1, Int.max] }
        let parts = key.split(separator: "_")
        if parts.count == 2, let l = Int(parts[0]) { return [1, l, parts[1] == "mid" ? 1 : 0] }
        if key == "all" { return [2] }
        let numbers = key.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        if key.hasPrefix("L"), !numbers.isEmpty { return [2, numbers[0] + 1, numbers.count > 1 ? numbers[1] : -1] }
        return [3]
    }
}
