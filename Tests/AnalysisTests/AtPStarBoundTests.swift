import Analysis
import Foundation
import GPT2
import Support
import TensorCore
import Testing

/// AtP*'s bound on missed effects: the subset patches against whole forward passes with one
/// `replace` intervention per node, singletons against the patching engine, and the bound against
/// a brute force over every subset of a small site with its own t distribution.
@Suite struct AtPStarBoundTests {
    static let clean = [[50256, 464, 3797, 3332, 319, 262, 2603, 290, 262], [50256, 32, 3290, 4966, 287, 262, 3952, 290, 257]]
    static let corrupt = [[50256, 464, 3290, 3332, 319, 262, 2603, 290, 262], [50256, 32, 3797, 4966, 287, 262, 3952, 290, 257]]
    static let answer = [2603, 3952], wrong = [3290, 3797]
    static var batch: Patching.Batch { .init(clean: clean, corrupt: corrupt, answer: answer, wrong: wrong) }

    static func model(_ name: String) throws -> GPT2Model {
        try GPT2Model(checkpoint: Checkpoint.open(PatchingEngineTests.fixtures.appendingPathComponent("models/\(name)").path))
    }

    /// m(r with every node of `nodes` := d's) − m(r) for prompt b: one forward with a `replace`
    /// intervention per node (positions and heads selected by the intervention).
    static func interventionEffect(_ model: GPT2Model, _ nodes: [SiteIndex], prompt b: Int, direction: PatchDirection) throws -> Double {
        let (r, d) = direction == .denoise ? (corrupt, clean) : (clean, corrupt)
        let hooks = Set(nodes.map { HookName($0.site.point, layer: $0.layer) })
        let donor = try model.forward(d, cache: hooks, logits: .last)
        let ivs = nodes.map { i in
            let hook = HookName(i.site.point, layer: i.layer)
            return Intervention(hook, positions: i.position.map { [$0] }, heads: i.head.map { [$0] }, .replace(donor.cache[hook]!))
        }
        let V = model.config.dVocab
        func metric(_ logits: Tensor) -> Double { Double(logits.data[b * V + answer[b]]) - Double(logits.data[b * V + wrong[b]]) }
        return metric(try model.forward(r, interventions: ivs, logits: .last).logits) - metric(try model.forward(r, logits: .last).logits)
    }

    @Test(arguments: ["tiny-ln", "tiny-lnfree"], [PatchDirection.denoise, .noise])
    func subsetPatchesMatchInterventionForwards(model name: String, direction: PatchDirection) throws {
        let model = try Self.model(name)
        let L = model.config.nLayers, NH = model.config.nHeads, T = Self.clean[0].count
        var rng = SplitMix64(seed: 7)
        var worst = 0.0, count = 0
        for site in PatchSite.allCases {
            let nodes = SiteIndex.all(site, nLayers: L, nHeads: NH, T: T)
            // Per prompt: two random subsets of about a third of the nodes, and one empty one.
            let subsets = (0..<2).map { _ in (0..<2).map { _ in nodes.filter { _ in rng.next(below: 3) == 0 } } + [[]] }
            let got = try AtPStarBound.subsetEffects(model: model, batch: Self.batch, subsets: subsets, direction: direction)
            for b in 0..<2 {
                for (j, s) in subsets[b].enumerated() {
                    let want = s.isEmpty ? 0 : try Self.interventionEffect(model, s, prompt: b, direction: direction)
                    worst = max(worst, abs(got[b][j] - want))
                    #expect(abs(got[b][j] - want) < 1e-4, "\(name) \(site) prompt \(b) subset \(j) (\(s.count) nodes): \(got[b][j]) vs \(want)")
                    count += 1
                }
            }
        }
        print("\(name) \(direction): \(count) subsets, max |subset patch − intervention forward| \(worst)")
    }

    /// A subset of one node is activation patching of that node: the patching engine's value.
    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func singletonsAreActivationPatching(model name: String) throws {
        let model = try Self.model(name)
        let exact = try Patching.run(model: model, batch: Self.batch, sites: PatchSite.allCases, methods: [.activation], direction: .denoise)
        for b in 0..<2 {
            let rows = exact[b].rows
            let got = try AtPStarBound.subsetEffects(model: model, batch: Self.batch,
                                                     subsets: (0..<2).map { $0 == b ? rows.map { [$0.index] } : [] }, direction: .denoise)
            for (j, row) in rows.enumerated() {
                #expect(abs(got[b][j] - row.activation!) < 1e-4, "\(name) prompt \(b) \(row.index)")
            }
        }
    }

    /// Student's t CDF by Simpson's rule on the density (the test's own t distribution).
    static func tCDF(_ t: Double, nu: Double) -> Double {
        let c = exp(lgamma((nu + 1) / 2) - lgamma(nu / 2)) / (nu * Double.pi).squareRoot()
        func f(_ x: Double) -> Double { c * pow(1 + x * x / nu, -(nu + 1) / 2) }
        let n = 20_000, h = abs(t) / Double(n)
        var s = f(0) + f(abs(t))
        for i in 1..<n { s += (i % 2 == 1 ? 4 : 2) * f(Double(i) * h) }
        let half = s * h / 3
        return t >= 0 ? 0.5 + half : 0.5 - half
    }

    @Test func tQuantileInvertsTheDensity() {
        for nu in [1.0, 2.5, 7, 30.3] {
            for p in [0.6, 0.9, 0.95, 0.99] {
                let t = StudentT.quantile(p, nu: nu)
                #expect(abs(Self.tCDF(t, nu: nu) - p) < 1e-7, "ν \(nu), p \(p): t \(t), CDF \(Self.tCDF(t, nu: nu))")
                #expect(abs(StudentT.cdf(t, nu: nu) - p) < 1e-12)
            }
        }
    }

    /// Three unverified z nodes of the LN test model, every one of their 8 subsets patched on both
    /// prompts (16 samples): the bound equals the smallest θ, found by bisection, at which every
    /// node's Welch p-value P(T_ν > (θ − |ī₊ − ī₋|)/s) is at most 1 − confidence, all computed here.
    @Test(arguments: [0.9, 0.95])
    func boundMatchesABruteForce(confidence: Double) throws {
        let model = try Self.model("tiny-ln")
        let nodes = Array(SiteIndex.all(.z, nLayers: model.config.nLayers, nHeads: model.config.nHeads, T: 9).suffix(3))
        var samples: [AtPStarBound.Sample] = []
        for b in 0..<2 {
            for mask in 0..<8 {
                let members = (0..<3).map { mask & (1 << $0) != 0 }
                let s = nodes.indices.filter { members[$0] }.map { nodes[$0] }
                samples.append(.init(members: members, effect: s.isEmpty ? 0 : try Self.interventionEffect(model, s, prompt: b, direction: .denoise)))
            }
        }
        // Per node: difference, Welch standard error and degrees of freedom, by hand.
        let stats = (0..<3).map { j -> (d: Double, s: Double, nu: Double) in
            let plus = samples.filter { $0.members[j] }.map(\.effect), minus = samples.filter { !$0.members[j] }.map(\.effect)
            let mp = plus.reduce(0, +) / 8, mm = minus.reduce(0, +) / 8
            let vp = plus.map { ($0 - mp) * ($0 - mp) }.reduce(0, +) / 7, vm = minus.map { ($0 - mm) * ($0 - mm) }.reduce(0, +) / 7
            let se2 = vp / 8 + vm / 8
            return (mp - mm, se2.squareRoot(), se2 * se2 / ((vp / 8) * (vp / 8) / 7 + (vm / 8) * (vm / 8) / 7))
        }
        func maxP(_ theta: Double) -> Double { stats.map { 1 - Self.tCDF((theta - abs($0.d)) / $0.s, nu: $0.nu) }.max()! }
        var lo = 0.0, hi = 1.0
        while maxP(hi) > 1 - confidence { hi *= 2 }
        for _ in 0..<100 { let mid = (lo + hi) / 2; if maxP(mid) > 1 - confidence { lo = mid } else { hi = mid } }
        let (bound, node, _) = AtPStarBound.bound(samples, nodes: 3, confidence: confidence)
        print("confidence \(confidence): bound \(bound) (node \(node ?? -1)), brute force \(hi), |d| \(stats.map { abs($0.d) })")
        #expect(abs(bound - hi) < 1e-6 * max(1, hi))
        #expect(bound > stats.map { abs($0.d) }.max()!)
    }

    /// Fewer than two samples on a side of a node leave its bound undefined (infinite).
    @Test func tooFewSamplesGiveNoBound() {
        let samples = [AtPStarBound.Sample(members: [true], effect: 1), .init(members: [false], effect: 0), .init(members: [false], effect: 0.5)]
        #expect(AtPStarBound.bound(samples, nodes: 1, confidence: 0.95).bound == .infinity)
    }
}
