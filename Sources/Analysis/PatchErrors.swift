import Foundation

/// How far each estimator is from activation patching (DESIGN.md, "Error of an estimator"), per
/// site kind over all layers and per layer, on raw values and on values normalised per prompt by
/// metric(clean) − metric(corrupt).
///
/// Two kinds of entries are not compared:
/// - the prompts whose |metric(clean) − metric(corrupt)| is below the run's `--min-gap` (the
///   model does not tell the two prompts apart: their effects are noise, and dividing by their
///   gap blows the normalised values up) are left out of every metric;
/// - structural zeros — positions before the first token where the clean and corrupted prompts
///   differ, where every activation is the same in both runs so that activation patching and
///   the estimates are 0 by construction — are left out of Pearson, Spearman, sign agreement
///   and top-k recall, and counted apart (`n_structural_zeros`). NMAE keeps them (they add 0 to
///   both of its sums), so it is unchanged; `n` counts the entries the other metrics compare.
public struct EstimatorError: Sendable, Equatable, Codable {
    public var site: String
    public var method: String
    /// nil: over every layer.
    public var layer: Int?
    public var normalized: Bool
    public var metric: String
    public var value: Double

    public static let metrics = ["nmae", "pearson", "spearman", "sign_agreement", "topk_recall_10", "topk_recall_5pct", "n",
                                 "n_structural_zeros"]

    /// One prompt's patching numbers at one site index, as `errors(_:)` reads them.
    public struct Sample: Sendable {
        public var prompt: Int
        public var site: String
        public var layer: Int
        public var activation: Double
        public var estimates: [String: Double]
        /// Whether the entry is zero by construction (its position is before the prompt's first
        /// differing token). nil when unknown (runs stored before lnlens marked it): then an
        /// entry whose activation and estimate are both exactly 0 is taken as one.
        public var structuralZero: Bool?
        public init(prompt: Int, site: String, layer: Int, activation: Double, estimates: [String: Double],
                    structuralZero: Bool? = nil) {
            self.prompt = prompt
            self.site = site
            self.layer = layer
            self.activation = activation
            self.estimates = estimates
            self.structuralZero = structuralZero
        }
    }

    /// Every metric for every (site, method, layer or all, raw or normalised). `gaps` maps a prompt
    /// to metric(clean) − metric(corrupt); prompts with |gap| < `minGap` are left out, and prompts
    /// with a zero or unknown gap are left out of the normalised values. AtP* estimates |effect|:
    /// it is compared with |activation|.
    public static func errors(_ samples: [Sample], gaps: [Int: Double], minGap: Double = 0) -> [EstimatorError] {
        var out: [EstimatorError] = []
        // Every group is reported (n = 0 when all its prompts are left out).
        func kept(_ s: Sample) -> Bool { gaps[s.prompt].map { abs($0) >= minGap } ?? true }
        let bySite = Dictionary(grouping: samples, by: \.site)
        for site in bySite.keys.sorted() {
            let siteSamples = bySite[site]!
            let methods = Set(siteSamples.flatMap { $0.estimates.keys }).sorted()
            let layers = Set(siteSamples.map(\.layer)).sorted()
            for method in methods {
                for layer in [nil] + layers.map(Optional.some) {
                    let group = siteSamples.filter { layer == nil || $0.layer == layer! }
                    for normalized in [false, true] {
                        var exact: [Double] = [], estimate: [Double] = [], structural: [Bool] = []
                        for s in group where kept(s) {
                            guard let e = s.estimates[method] else { continue }
                            var x = s.activation, y = e
                            if normalized {
                                guard let gap = gaps[s.prompt], gap != 0 else { continue }
                                x /= gap
                                y = method == "atp_star" ? y / abs(gap) : y / gap
                            }
                            exact.append(method == "atp_star" ? abs(x) : x)
                            estimate.append(y)
                            structural.append(s.structuralZero ?? (s.activation == 0 && e == 0))
                        }
                        for (metric, value) in measure(estimate, exact, structural: structural) {
                            out.append(EstimatorError(site: site, method: method, layer: layer, normalized: normalized,
                                                      metric: metric, value: value))
                        }
                    }
                }
            }
        }
        return out
    }

    /// The metrics of one group, in `metrics` order: NMAE over every entry, the others over the
    /// entries that are not structural zeros.
    static func measure(_ estimate: [Double], _ exact: [Double], structural: [Bool]) -> [(String, Double)] {
        let compared = exact.indices.filter { !structural[$0] }
        let e = compared.map { estimate[$0] }, x = compared.map { exact[$0] }
        let n = x.count
        let topFive = max(1, Int((Double(n) * 0.05).rounded(.up)))
        return [
            ("nmae", Metrics.nmae(estimate, exact)),
            ("pearson", Metrics.pearson(e, x)),
            ("spearman", Metrics.spearman(e, x)),
            ("sign_agreement", Metrics.signAgreement(e, x)),
            ("topk_recall_10", Metrics.topKRecall(e, x, k: 10)),
            ("topk_recall_5pct", Metrics.topKRecall(e, x, k: topFive)),
            ("n", Double(n)),
            ("n_structural_zeros", Double(exact.count - n)),
        ]
    }
}
