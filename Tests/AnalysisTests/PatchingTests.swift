import Analysis
import Foundation
import GPT2
import TensorCore
import Testing

/// The causal shortcuts of the patching engine against the plain way: a whole forward pass with
/// the donor's activation written in by an intervention, for every index of every site kind.
@Suite struct PatchingEngineTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func everySiteMatchesAFullPatchedForward(model name: String) throws {
        let model = try GPT2Model(checkpoint: Checkpoint.open(Self.fixtures.appendingPathComponent("models/\(name)").path))
        let clean = [[50256, 464, 3797, 3332, 319, 262, 2603, 290, 262], [50256, 32, 3290, 4966, 287, 262, 3952, 290, 257]]
        let corrupt = [[50256, 464, 3290, 3332, 319, 262, 2603, 290, 262], [50256, 32, 3797, 4966, 287, 262, 3952, 290, 257]]
        let answer = [2603, 3952], wrong = [3290, 3797]
        let T = clean[0].count, L = model.config.nLayers, NH = model.config.nHeads, C = model.config.dModel
        let results = try Patching.run(model: model, batch: .init(clean: clean, corrupt: corrupt, answer: answer, wrong: wrong),
                                       sites: PatchSite.allCases, methods: [.activation], direction: .denoise)
        let all = Set(HookName.all(nLayers: L))
        let donor = try model.forward(clean, cache: all, logits: .last)
        let base = try model.forward(corrupt, cache: [], logits: .last)
        func metric(_ logits: Tensor, _ b: Int) -> Double {
            let V = model.config.dVocab
            return Double(logits.data[b * V + answer[b]]) - Double(logits.data[b * V + wrong[b]])
        }
        var worst = 0.0, count = 0
        for b in 0..<2 {
            #expect(abs(results[b].corruptMetric - metric(base.logits, b)) < 1e-4)
            #expect(abs(results[b].cleanMetric - metric(donor.logits, b)) < 1e-4)
            for row in results[b].rows {
                let i = row.index
                let hook = HookName(i.site.point, layer: i.layer)
                let iv = Intervention(hook, positions: i.position.map { [$0] }, heads: i.head.map { [$0] }, .replace(donor.cache[hook]!))
                let patched = try model.forward(corrupt, interventions: [iv], logits: .last)
                let want = metric(patched.logits, b) - metric(base.logits, b)
                let got = try #require(row.activation)
                worst = max(worst, abs(got - want))
                #expect(abs(got - want) < 1e-4, "\(name) prompt \(b) \(i): \(got) vs \(want)")
                count += 1
            }
        }
        _ = (T, NH, C)
        print("\(name): \(count) patches, max |engine − full forward| \(worst)")
        #expect(count == 2 * PatchSite.allCases.reduce(0) { $0 + SiteIndex.all($1, nLayers: L, nHeads: NH, T: T).count })
    }
}
