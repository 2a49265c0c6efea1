import Foundation
import GPT2
import TensorCore
import Testing

/// `patchedFinal` (the forward's blocks over the patched rows, attending to the base run's keys
/// and values before them) against a whole forward with the donor's activation written in by an
/// intervention, under a LayerNorm plan whose ln_1 differs between Q/K and V (as while training
/// removes LayerNorm), for every patch kind, with the patches batched together and one at a time.
@Suite struct PatchedRowsTests {
    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func patchedRowsMatchAFullForwardUnderASplitPlan(model name: String) throws {
        let model = try GPT2Model(checkpoint: Checkpoint.open(Fixtures.model(name).path), processing: .none)
        let base = [[50256, 464, 3290, 3332, 319, 262, 2603, 290], [50256, 32, 3797, 4966, 287, 262, 3952, 290]]
        let donor = [[50256, 464, 3797, 3332, 319, 262, 2603, 290], [50256, 32, 3290, 4966, 287, 262, 3952, 290]]
        let L = model.config.nLayers
        var plan = model.layerNormPlan
        // Fixed scales of the model's own magnitude (an LN-free checkpoint divides by sqrt(1e12)).
        var unit: Float = 1
        if case .fixed(let s) = model.layerNormScale { unit = s }
        for l in 0..<L { plan.blocks[l].ln1V = .fixed(unit * (1.7 + Float(l))) }
        plan.blocks[0].ln2 = .fixed(unit * 2.3)
        let all = Set(HookName.all(nLayers: L))
        let basePass = try model.run(base, ForwardOptions(logits: .none, retainForBackward: true, layerNorms: plan))
        let donorPass = try model.run(donor, ForwardOptions(cache: all, logits: .none, retainForBackward: true, layerNorms: plan))
        var patches: [ActivationPatch] = []
        let kinds: [(ActivationPatch.Kind, HookName.Point)] = [
            (.residPre, .residPre), (.residMid, .residMid), (.attnOut, .attnOut), (.mlpOut, .mlpOut),
            (.q, .q), (.k, .k), (.v, .v), (.z, .z), (.pattern, .pattern),
        ]
        for (kind, _) in kinds {
            for l in 0..<L {
                for position in [nil, 2, 5] as [Int?] {
                    let head: Int? = [.q, .k, .v, .z, .pattern].contains(kind) ? l % model.config.nHeads : nil
                    patches.append(ActivationPatch(prompt: l % 2, layer: l, kind: kind, position: position, head: head))
                }
            }
        }
        let batched = try model.patchedFinal(base: basePass, donor: donorPass, patches: patches)
        let single = try model.patchedFinal(base: basePass, donor: donorPass, patches: patches, maxRows: 1)
        var worst: Float = 0
        for (j, p) in patches.enumerated() {
            let point = kinds.first { $0.0 == p.kind }!.1
            let hook = HookName(point, layer: p.layer)
            let iv = Intervention(hook, positions: p.position.map { [$0] }, heads: p.head.map { [$0] }, .replace(donorPass.cache[hook]!))
            let full = try model.run(base, ForwardOptions(interventions: [iv], logits: .none, layerNorms: plan))
            let want = model.finalAtLastPosition(full)[p.prompt]
            for (got, label) in [(batched[j], "batched"), (single[j], "one at a time")] {
                let diff = zip(got, want).map { abs($0 - $1) }.max()!
                worst = max(worst, diff)
                #expect(diff < 1e-4, "\(name) \(label) \(p): max |diff| \(diff)")
            }
        }
        print("\(name): \(patches.count) patches under a split ln_1 plan, max |rows − full forward| \(worst)")
    }
}
