import Analysis
import Foundation
import Support
import Testing

/// The bootstrap interval of NMAE: deterministic, around the point estimate, degenerate when
/// every pair has the same relative error, narrower with more pairs.
@Suite struct BootstrapTests {
    /// Pairs whose error varies: exact values ±1…±3, estimates off by a pair-dependent amount.
    static func pairs(_ n: Int) -> (estimate: [Double], exact: [Double]) {
        var rng = SplitMix64(seed: 42)
        var estimate: [Double] = [], exact: [Double] = []
        for _ in 0..<n {
            let x = (Double(rng.next(below: 2000)) / 1000 + 1) * (rng.next(below: 2) == 0 ? -1 : 1)
            exact.append(x)
            estimate.append(x + Double(rng.next(below: 1000)) / 1000 - 0.3)
        }
        return (estimate, exact)
    }

    @Test func quantileInterpolatesLikeNumpy() {
        // numpy.percentile([1, 2, 3, 4], [0, 25, 50, 97.5, 100]) = 1, 1.75, 2.5, 3.925, 4
        let v: [Double] = [1, 2, 3, 4]
        #expect(Metrics.quantile(sorted: v, 0) == 1)
        #expect(Metrics.quantile(sorted: v, 0.25) == 1.75)
        #expect(Metrics.quantile(sorted: v, 0.5) == 2.5)
        #expect(abs(Metrics.quantile(sorted: v, 0.975) - 3.925) < 1e-12)
        #expect(Metrics.quantile(sorted: v, 1) == 4)
        #expect(Metrics.quantile(sorted: [], 0.5).isNaN)
    }

    @Test func intervalIsDeterministicAndContainsTheEstimate() {
        let (estimate, exact) = Self.pairs(500)
        let a = Metrics.bootstrapNMAE(estimate, exact), b = Metrics.bootstrapNMAE(estimate, exact)
        #expect(a == b)
        let point = Metrics.nmae(estimate, exact)
        #expect(a.low < point && point < a.high, "\(a) around \(point)")
        #expect(Metrics.bootstrapNMAE(estimate, exact, seed: 1) != a)
        let wide = Metrics.bootstrapNMAE(Array(estimate.prefix(50)), Array(exact.prefix(50)))
        #expect(wide.high - wide.low > a.high - a.low)
        print("NMAE \(point) %, 95% CI \(a.low)–\(a.high) (500 pairs), \(wide.low)–\(wide.high) (50 pairs)")
    }

    @Test func degenerateCases() {
        // The same relative error everywhere: every resample has NMAE 10 %.
        let exact: [Double] = [1, -2, 3, 4], estimate = exact.map { $0 * 1.1 }
        let ci = Metrics.bootstrapNMAE(estimate, exact)
        #expect(abs(ci.low - 10) < 1e-9 && abs(ci.high - 10) < 1e-9)
        #expect(Metrics.bootstrapNMAE([], []).low.isNaN)
        #expect(Metrics.bootstrapNMAE(exact, exact) == ConfidenceInterval(low: 0, high: 0))
    }

    @Test func intervalsPerLayerDoNotDependOnRowOrder() {
        var rows: [ComponentAttribution] = []
        let (estimate, exact) = Self.pairs(60)
        for i in 0..<60 {
            rows.append(ComponentAttribution(prompt: i / 6, component: .head(layer: i % 2, head: i % 3), dla: estimate[i], directEffect: exact[i]))
        }
        rows.append(ComponentAttribution(prompt: 0, component: .mlp(layer: 0), dla: 5, directEffect: 1))
        let forward = NMAEIntervals(rows: rows), backward = NMAEIntervals(rows: rows.reversed())
        #expect(forward == backward)
        #expect(Set(forward.perLayer.keys) == [0, 1])
        let summary = NMAESummary(rows: rows)
        for (layer, ci) in forward.perLayer { #expect(ci.low <= summary.perLayer[layer]! && summary.perLayer[layer]! <= ci.high) }
    }

    @Test func headsAreRankedByMeanAbsoluteDirectEffect() {
        let rows = [
            ComponentAttribution(prompt: 0, component: .head(layer: 0, head: 1), dla: 1, directEffect: -2),
            ComponentAttribution(prompt: 1, component: .head(layer: 0, head: 1), dla: 1, directEffect: 2),
            ComponentAttribution(prompt: 0, component: .head(layer: 1, head: 0), dla: 1, directEffect: 1),
            ComponentAttribution(prompt: 0, component: .head(layer: 0, head: 0), dla: 0, directEffect: 1),
            ComponentAttribution(prompt: 0, component: .embed, dla: 9, directEffect: 9),
        ]
        let ranked = HeadEffect.ranked(rows)
        #expect(ranked.map(\.component.description) == ["L0H1", "L0H0", "L1H0"])
        #expect(ranked[0].meanAbsDE == 2 && ranked[0].meanDE == 0 && ranked[0].meanDLA == 1 && ranked[0].prompts == 2)
        #expect(ranked[0].nmae == 100)
    }
}
