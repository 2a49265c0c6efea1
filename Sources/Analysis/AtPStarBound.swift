import Foundation
import GPT2
import Support
import TensorCore

/// The settings of AtP*'s bound on missed effects (`lnlens patch --atp-star-bound`).
public struct AtPStarBoundSettings: Sendable, Equatable {
    /// Nodes verified by activation patching: the `top` of largest mean AtP* per site kind.
    public var top = 10
    /// Random subsets patched per prompt.
    public var subsets = 16
    /// The probability with which each unverified node joins a subset.
    public var inclusion = 0.5
    /// 1 − α of the upper confidence bound.
    public var confidence = 0.95
    /// SplitMix64 seed of the subsets.
    public var seed: UInt64 = 0

    public init() {}
}

/// AtP*'s diagnostic (Kramár et al. 2024, arXiv 2403.00745, §4.3): an upper confidence bound on
/// the mean effect |c(n)| of every node n that AtP* left unverified, from random subsets of those
/// nodes patched together (docs/patching.md, "The bound on missed effects").
public enum AtPStarBound {
    /// One patched subset: which unverified nodes it holds (`members[j]`: node j) and its effect.
    public struct Sample: Sendable {
        public var members: [Bool]
        public var effect: Double
        public init(members: [Bool], effect: Double) { (self.members, self.effect) = (members, effect) }
    }

    /// One node's Welch statistics: ī₊ − ī₋, the Welch standard error, its degrees of freedom and
    /// the node's upper bound |ī₊ − ī₋| + t(confidence; ν) · s (infinite with fewer than two
    /// samples on a side).
    public struct NodeTest: Sendable, Equatable {
        public var difference: Double
        public var standardError: Double
        public var degreesOfFreedom: Double
        public var upper: Double
    }

    /// The bound: the smallest θ at which every node's one-sided Welch test rejects |c(n)| ≥ θ at
    /// level 1 − confidence, i.e. the largest node upper bound; and the node that sets it.
    public static func bound(_ samples: [Sample], nodes: Int, confidence: Double) -> (bound: Double, node: Int?, tests: [NodeTest]) {
        let tests = (0..<nodes).map { j in
            welch(plus: samples.filter { $0.members[j] }.map(\.effect), minus: samples.filter { !$0.members[j] }.map(\.effect),
                  confidence: confidence)
        }
        guard let worst = tests.indices.max(by: { tests[$0].upper < tests[$1].upper }) else { return (.nan, nil, []) }
        return (tests[worst].upper, worst, tests)
    }

    /// Welch's one-sided test of |mean(plus) − mean(minus)| ≥ θ, inverted for θ.
    public static func welch(plus: [Double], minus: [Double], confidence: Double) -> NodeTest {
        func meanVar(_ x: [Double]) -> (Double, Double) {
            let m = x.reduce(0, +) / Double(x.count)
            return (m, x.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(x.count - 1))
        }
        guard plus.count >= 2, minus.count >= 2 else { return NodeTest(difference: .nan, standardError: .nan, degreesOfFreedom: .nan, upper: .infinity) }
        let (mp, vp) = meanVar(plus), (mm, vm) = meanVar(minus)
        let a = vp / Double(plus.count), b = vm / Double(minus.count)
        let se = (a + b).squareRoot(), d = mp - mm
        // A zero standard error (every subset's effect the same) leaves the difference itself.
        guard se > 0 else { return NodeTest(difference: d, standardError: 0, degreesOfFreedom: .nan, upper: abs(d)) }
        let nu = (a + b) * (a + b) / (a * a / Double(plus.count - 1) + b * b / Double(minus.count - 1))
        return NodeTest(difference: d, standardError: se, degreesOfFreedom: nu, upper: abs(d) + StudentT.quantile(confidence, nu: nu) * se)
    }

    /// `count` subsets of `nodes` unverified nodes, each node in with probability `inclusion`,
    /// drawn from SplitMix64(seed, stream) node by node in order.
    public static func subsets(count: Int, nodes: Int, inclusion: Double, seed: UInt64, stream: UInt64) -> [[Bool]] {
        var rng = SplitMix64(seed: seed, stream: stream)
        return (0..<count).map { _ in (0..<nodes).map { _ in rng.unit() < inclusion } }
    }

    /// The effect of patching every node of each subset at once, per prompt of `batch`:
    /// `m(r with each node := d's value) − m(r)`, r and d as `direction` says (`Patching.run`).
    /// The subsets run as rows of one forward pass of r's tokens, the donor's values written in
    /// by one intervention per hook.
    public static func subsetEffects(model: GPT2Model, batch: Patching.Batch, subsets: [[[SiteIndex]]],
                                     direction: PatchDirection) throws -> [[Double]] {
        let patchedTokens = direction == .denoise ? batch.corrupt : batch.clean
        let donorTokens = direction == .denoise ? batch.clean : batch.corrupt
        let T = batch.clean[0].count
        var rows: [(prompt: Int, nodes: [SiteIndex])] = []
        for (b, list) in subsets.enumerated() { for s in list { rows.append((b, s)) } }
        if rows.isEmpty { return subsets.map { _ in [] } }
        let hooks = Set(rows.flatMap { $0.nodes.map { HookName($0.site.point, layer: $0.layer) } })
        let donor = try model.run(donorTokens, ForwardOptions(cache: hooks, logits: .none))
        let base = try model.run(patchedTokens, ForwardOptions(logits: .none, retainForBackward: true))
        let interventions = hooks.sorted { $0.description < $1.description }.map { hook in
            let d = donor.cache[hook]!, rowNodes = rows.map { row in (row.prompt, row.nodes.filter { HookName($0.site.point, layer: $0.layer) == hook }) }
            return Intervention(hook, .custom { t in
                let perPrompt = t.count / t.shape[0]
                for (r, (b, nodes)) in rowNodes.enumerated() {
                    for node in nodes {
                        for range in Patching.entryRanges(node, shape: t.shape, T: T) {
                            for e in range { t.data[r * perPrompt + e] = d.data[b * perPrompt + e] }
                        }
                    }
                }
            })
        }
        let patched = try model.run(rows.map { patchedTokens[$0.prompt] }, ForwardOptions(interventions: interventions, logits: .none, retainForBackward: true))
        let metric = (0..<patchedTokens.count).map { LogitDifference(model: model, answer: batch.answer[$0], wrong: batch.wrong[$0]) }
        let baseMetric = model.finalAtLastPosition(base).enumerated().map { metric[$0](($1)) }
        var out: [[Double]] = subsets.map { _ in [] }
        for (r, x) in model.finalAtLastPosition(patched).enumerated() {
            out[rows[r].prompt].append(metric[rows[r].prompt](x) - baseMetric[rows[r].prompt])
        }
        withExtendedLifetime((base, patched)) {}
        return out
    }
}

/// Student's t distribution: the CDF from the regularised incomplete beta function (a continued
/// fraction, Lentz's method), the quantile by bisection on it.
public enum StudentT {
    /// P(T ≤ t) for ν degrees of freedom (ν > 0).
    public static func cdf(_ t: Double, nu: Double) -> Double {
        let tail = 0.5 * incompleteBeta(nu / (nu + t * t), a: nu / 2, b: 0.5)
        return t > 0 ? 1 - tail : tail
    }

    /// The t with P(T ≤ t) = p, for 0 < p < 1.
    public static func quantile(_ p: Double, nu: Double) -> Double {
        if p == 0.5 { return 0 }
        if p < 0.5 { return -quantile(1 - p, nu: nu) }
        var lo = 0.0, hi = 1.0
        while cdf(hi, nu: nu) < p && hi < 1e300 { (lo, hi) = (hi, hi * 2) }
        for _ in 0..<200 {
            let mid = (lo + hi) / 2
            if cdf(mid, nu: nu) < p { lo = mid } else { hi = mid }
            if hi - lo <= 1e-15 * max(1, hi) { break }
        }
        return (lo + hi) / 2
    }

    /// I_x(a, b), the regularised incomplete beta function.
    static func incompleteBeta(_ x: Double, a: Double, b: Double) -> Double {
        if x <= 0 { return 0 }
        if x >= 1 { return 1 }
        let logBeta: Double = lgamma(a + b) - lgamma(a) - lgamma(b)
        let front: Double = exp(logBeta + a * log(x) + b * log(1 - x))
        // The continued fraction converges fast for x < (a + 1)/(a + b + 2); else the symmetry.
        if x > (a + 1) / (a + b + 2) { return 1 - front * continuedFraction(1 - x, a: b, b: a) / b }
        return front * continuedFraction(x, a: a, b: b) / a
    }

    static func continuedFraction(_ x: Double, a: Double, b: Double) -> Double {
        let tiny = 1e-300
        var c = 1.0, d = 1 - (a + b) * x / (a + 1)
        if abs(d) < tiny { d = tiny }
        d = 1 / d
        var h = d
        for m in 1...10_000 {
            let m = Double(m)
            let even: Double = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
            let odd: Double = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
            for num in [even, odd] {
                d = 1 + num * d
                if abs(d) < tiny { d = tiny }
                c = 1 + num / c
                if abs(c) < tiny { c = tiny }
                d = 1 / d
                h *= d * c
            }
            if abs(d * c - 1) < 1e-16 { break }
        }
        return h
    }
}

extension PatchSite {
    /// Why `--atp-star-bound` refuses a residual-stream site, and what to do instead: the bound
    /// reads each node's effect off random subsets patched together, which needs the nodes'
    /// effects to add up; residual-stream nodes overwrite each other instead.
    public static func boundResidualReason(_ site: PatchSite) -> String {
        "\(site.rawValue) nodes are the residual stream itself, so patching several at once overwrites rather than adds "
            + "and random subsets cannot bound one node's effect; leave resid_pre and resid_mid out of --sites (e.g. --sites attn_out,mlp_out,z)"
    }
}
