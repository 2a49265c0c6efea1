import Foundation

/// How far each estimator is from activation patching (DESIGN.md, "Error of an estimator"), per
/// site kind over all layers and per layer, on raw values and on values normalised per prompt by
/// metric(clean) − metric(corrupt).
public struct EstimatorError: Sendable, Equatable, Codable {
    public var site: String
    public var method: String
    /// nil: over every layer.
    public var layer: Int?
    public var normalized: Bool
    public var metric: String
    public var value: Double

    public static let metrics = ["nmae", "pearson", "spearman", "sign_agreement", "topk_recall_10", "topk_recall_5pct", "n"]

    /// One prompt's patching numbers at one site index, as `errors(_:)` reads them.
    public struct Sample: Sendable {
        public var prompt: Int
        public var site: String
        public var layer: Int
        public var activation: Double
        public var estimates: [String: Double]
        public init(prompt: Int, site: String, layer: Int, activation: Double, estimates: [String: Double]) {
            self.prompt = prompt
            self.site = site
            self.layer = layer
            self.activation = activation
            self.estimates = estimates
        }
    }

    /// Every metric for every (site, method, layer or all, raw or normalised). `gaps` maps a prompt
    /// to metric(clean) − metric(corrupt) (prompts with a zero gap are left out of the normalised
    /// values). AtP* estimates |effect|: it is compared with |activation|.
    public static func errors(_ samples: [Sample], gaps: [Int: Double]) -> [EstimatorError] {
        var out: [EstimatorError] = []
        let bySite = Dictionary(grouping: samples, by: \.site)
        for site in bySite.keys.sorted() {
            let siteSamples = bySite[site]!
            let methods = Set(siteSamples.flatMap { $0.estimates.keys }).sorted()
            let layers = Set(siteSamples.map(\.layer)).sorted()
            for method in methods {
                for layer in [nil] + layers.map(Optional.some) {
                    let group = siteSamples.filter { layer == nil || $0.layer == layer! }
                    for normalized in [false, true] {
                        var exact: [Double] = [], estimate: [Double] = []
                        for s in group {
                            guard let e = s.estimates[method] else { continue }
                            var x = s.activation, y = e
                            if normalized {
                                guard let gap = gaps[s.prompt], gap != 0 else { continue }
                                x /= gap
                                y = method == "atp_star" ? y / abs(gap) : y / gap
                            }
                            exact.append(method == "atp_star" ? abs(x) : x)
                            estimate.append(y)
                        }
                        for (metric, value) in measure(estimate, exact) {
                            out.append(EstimatorError(site: site, method: method, layer: layer, normalized: normalized,
                                                      metric: metric, value: value))
                        }
                    }
                }
            }
        }
        return out
    }

    /// The metrics of one group, in `metrics` order.
    static func measure(_ estimate: [Double], _ exact: [Double]) -> [(String, Double)] {
        let n = exact.count
        let topFive = max(1, Int((Double(n) * 0.05).rounded(.up)))
        return [
            ("nmae", Metrics.nmae(estimate, exact)),
            ("pearson", Metrics.pearson(estimate, exact)),
            ("spearman", Metrics.spearman(estimate, exact)),
            ("sign_agreement", Metrics.signAgreement(estimate, exact)),
            ("topk_recall_10", Metrics.topKRecall(estimate, exact, k: 10)),
            ("topk_recall_5pct", Metrics.topKRecall(estimate, exact, k: topFive)),
            ("n", Double(n)),
        ]
    }
}
