import Analysis
import Foundation
import GPT2
import ResultsStore
import Support

/// AtP*'s bound on missed effects over a completed patch run's prompts (`--atp-star-bound`;
/// docs/patching.md, "The bound on missed effects"), stored as `summaries` rows of scope
/// `atp_star_bound`, one key per site kind.
extension PatchJob {
    /// `summaries.scope` of the bound's rows.
    public static let boundScope = "atp_star_bound"

    /// The bound per site kind, from the stored rows (AtP*'s ranking, activation patching's
    /// effects) and fresh subset patches of the prompts of the most common token length.
    func atpStarBoundRows(_ settings: AtPStarBoundSettings, stored: [ResultRow], examples: [PromptExample]) throws -> [SummaryRow] {
        let lengths = Dictionary(grouping: examples, by: { $0.tokens.count })
        // The most common length, the shorter on a tie.
        guard let T = lengths.keys.max(by: { (lengths[$0]!.count, -$0) < (lengths[$1]!.count, -$1) }) else { return [] }
        let prompts = lengths[T]!.sorted { $0.index < $1.index }
        let wanted = Set(prompts.map(\.index))
        var means: [SiteIndex: (atpStar: Double, activation: Double)] = [:]
        for r in stored where wanted.contains(r.promptIndex) && (r.quantity == StoreName.atpStar || r.quantity == StoreName.activation) {
            guard let site = PatchSite(rawValue: r.site), let layer = r.layer else { continue }
            let key = SiteIndex(site: site, layer: layer, position: r.position, head: r.head)
            var m = means[key] ?? (0, 0)
            if r.quantity == StoreName.atpStar { m.atpStar += r.value / Double(prompts.count) } else { m.activation += r.value / Double(prompts.count) }
            means[key] = m
        }
        var rows: [SummaryRow] = []
        for (s, site) in sites.enumerated() {
            let nodes = SiteIndex.all(site, nLayers: model.config.nLayers, nHeads: model.config.nHeads, T: T)
            // Ranked by mean AtP*, ties in node order; the first `top` are verified.
            let ranked = nodes.indices.sorted { (-(means[nodes[$0]]?.atpStar ?? 0), $0) < (-(means[nodes[$1]]?.atpStar ?? 0), $1) }
            let verified = Array(ranked.prefix(settings.top)).sorted(), unverified = Array(ranked.dropFirst(settings.top)).sorted()
            let samples = try boundSamples(settings, prompts: prompts, nodes: unverified.map { nodes[$0] }, stream: UInt64(s))
            let (bound, _, _) = AtPStarBound.bound(samples, nodes: unverified.count, confidence: settings.confidence)
            func maxAbs(_ list: [Int]) -> Double { list.map { abs(means[nodes[$0]]?.activation ?? 0) }.max() ?? .nan }
            let values: [(String, Double)] = [
                ("bound", unverified.isEmpty || !bound.isFinite ? .nan : bound), ("confidence", settings.confidence), ("top_k", Double(settings.top)),
                ("subsets", Double(settings.subsets)), ("inclusion", settings.inclusion), ("seed", Double(settings.seed)),
                ("n_tokens", Double(T)), ("prompts", Double(prompts.count)), ("samples", Double(samples.count)),
                ("n_nodes", Double(nodes.count)), ("n_verified", Double(verified.count)), ("n_unverified", Double(unverified.count)),
                ("max_abs_activation_verified", maxAbs(verified)), ("max_abs_activation_unverified", maxAbs(unverified)),
            ]
            rows += values.map { SummaryRow(scope: Self.boundScope, key: site.rawValue, metric: $0.0, value: $0.1) }
        }
        return rows
    }

    /// Every prompt's random subsets of `nodes`, patched: one sample per (prompt, subset). The
    /// subsets of prompt i come from stream (i, site) of the seed, so they depend on neither
    /// the batch nor the other prompts.
    func boundSamples(_ settings: AtPStarBoundSettings, prompts: [PromptExample], nodes: [SiteIndex], stream: UInt64) throws -> [AtPStarBound.Sample] {
        if nodes.isEmpty { return [] }
        var samples: [AtPStarBound.Sample] = []
        for start in stride(from: 0, to: prompts.count, by: batchSize) {
            let batch = Array(prompts[start..<min(start + batchSize, prompts.count)])
            let members = batch.map { ex in
                AtPStarBound.subsets(count: settings.subsets, nodes: nodes.count, inclusion: settings.inclusion,
                                     seed: settings.seed, stream: UInt64(ex.index) &* 64 &+ stream)
            }
            let effects = try AtPStarBound.subsetEffects(
                model: model,
                batch: .init(clean: batch.map(\.tokens), corrupt: batch.map { $0.corruptTokens! },
                             answer: batch.map(\.answerID), wrong: batch.map { $0.wrongID! }),
                subsets: members.map { $0.map { m in nodes.indices.filter { m[$0] }.map { nodes[$0] } } }, direction: direction)
            for (m, e) in zip(members, effects) { samples += zip(m, e).map { AtPStarBound.Sample(members: $0, effect: $1) } }
        }
        return samples
    }
}

/// One site kind's bound as `lnlens patch` prints it (`PatchRunReport.bounds`).
public struct AtPStarBoundReport: Encodable, Sendable {
    public let site: String
    /// metric → value (NULL/NaN: undefined), as stored.
    public let values: [String: Double]

    public var bound: Double? { self["bound"] }

    /// A stored metric, nil when absent or NULL.
    public subscript(_ metric: String) -> Double? { values[metric].flatMap { $0.isFinite ? $0 : nil } }

    enum CodingKeys: String, CodingKey { case site, values }

    /// NULL values as JSON null.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(site, forKey: .site)
        try c.encode(values.mapValues { $0.isFinite ? $0 : nil }, forKey: .values)
    }
}
