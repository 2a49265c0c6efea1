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
    public var site: PatchSite
    public var method: PatchMethod
    /// nil: over every layer.
    public var layer: Int?
    public var normalized: Bool
    public var metric: ErrorMetric
    public var value: Double

    /// One prompt's patching numbers at one site index, as `errors(_:)` reads them.
    public struct Sample: Sendable {
        public var prompt: Int
        public var site: PatchSite
        public var layer: Int
        public var activation: Double
        public var estimates: [PatchMethod: Double]
        /// Whether the entry is zero by construction (its position is before the prompt's first
        /// differing token). nil when unknown (runs stored before lnlens marked it): then an
        /// entry whose activation and estimate are both exactly 0 is taken as one.
        public var structuralZero: Bool?
        public init(prompt: Int, site: PatchSite, layer: Int, activation: Double, estimates: [PatchMethod: Double],
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
        // Sites and methods in the order of their names, as runs always stored them.
        let bySite = Dictionary(grouping: samples, by: \.site)
        for site in bySite.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
            let siteSamples = bySite[site]!
            let methods = Set(siteSamples.flatMap { $0.estimates.keys }).sorted { $0.rawValue < $1.rawValue }
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
                                y = method == .atpStar ? y / abs(gap) : y / gap
                            }
                            exact.append(method == .atpStar ? abs(x) : x)
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

    /// Every metric of one group, in `ErrorMetric` order: NMAE over every entry, the others over
    /// the entries that are not structural zeros.
    static func measure(_ estimate: [Double], _ exact: [Double], structural: [Bool]) -> [(ErrorMetric, Double)] {
        let compared = exact.indices.filter { !structural[$0] }
        let e = compared.map { estimate[$0] }, x = compared.map { exact[$0] }
        let n = x.count
        return ErrorMetric.allCases.map { metric in
            switch metric {
            case .nmae: (metric, Metrics.nmae(estimate, exact))
            case .pearson: (metric, Metrics.pearson(e, x))
            case .spearman: (metric, Metrics.spearman(e, x))
            case .signAgreement: (metric, Metrics.signAgreement(e, x))
            case .topKRecall10: (metric, Metrics.topKRecall(e, x, k: 10))
            case .topKRecall5Percent: (metric, Metrics.topKRecall(e, x, k: max(1, Int((Double(n) * 0.05).rounded(.up)))))
            case .n: (metric, Double(n))
            case .nStructuralZeros: (metric, Double(exact.count - n))
            }
        }
    }
}

/// How an estimator's error is measured (`EstimatorError`); `rawValue` is the name runs store
/// (`estimator_errors.metric`) and print.
public enum ErrorMetric: String, CaseIterable, Sendable, Codable {
    case nmae, pearson, spearman
    case signAgreement = "sign_agreement"
    case topKRecall10 = "topk_recall_10"
    case topKRecall5Percent = "topk_recall_5pct"
    /// Entries compared (structural zeros excluded).
    case n
    case nStructuralZeros = "n_structural_zeros"

    /// The metrics of the estimators' quality, without the counts.
    public static let quality: [ErrorMetric] = allCases.filter { $0 != .n && $0 != .nStructuralZeros }
}
