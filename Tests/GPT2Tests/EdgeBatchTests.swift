import Foundation
@testable import GPT2
import TensorCore
import Testing

/// Edge attribution runs its runs (the corrupted one, the IG steps, the clean one) as the prompts
/// of one batch, and backs up through the gradient runs alone (`ForwardPass(prompts:of:)`): both
/// against the same computed one run at a time, on the LayerNorm model and its LN-free twin.
@Suite struct EdgeBatchTests {
    static let clean = [50256, 464, 3290, 3332, 319, 262, 2603, 290]
    static let corrupt = [50256, 464, 3290, 3332, 319, 262, 3797, 290]
    static let other = [50256, 32, 3797, 4966, 287, 262, 3952, 290]

    static func model(_ name: String) throws -> GPT2Model {
        try GPT2Model(checkpoint: Checkpoint.open(Fixtures.model(name).path), processing: .all)
    }

    /// max |a − b| / max(1, max |b|) over finite entries; NaN in the same places.
    static func relativeDifference(_ a: [Float], _ b: [Float]) -> Double {
        precondition(a.count == b.count)
        let scale = max(1, b.reduce(0) { $1.isNaN ? $0 : max($0, Double(abs($1))) })
        return zip(a, b).reduce(0) { worst, pair in
            pair.0.isNaN != pair.1.isNaN ? .infinity : pair.1.isNaN ? worst : max(worst, Double(abs(pair.0 - pair.1)) / scale)
        }
    }

    @Test(arguments: ["tiny-ln", "tiny-lnfree"], [1, 2])
    func backwardOfTheFirstPromptsEqualsTheirOwnBackward(name: String, n: Int) throws {
        let model = try Self.model(name), L = model.config.nLayers
        let hooks = Set((0..<L).flatMap { l in [HookName.block(l, .q), .block(l, .v), .block(l, .residMid)] } + [HookName.embed()])
        let prompts = [Self.corrupt, Self.other, Self.clean]
        let metric = Metric.logitDifference(answer: Array(repeating: 3290, count: n), wrong: Array(repeating: 3797, count: n))
        let pass = try model.run(prompts, ForwardOptions(logits: .last, retainForBackward: true), gradHooks: hooks)
        let view = try model.backward(ForwardPass(prompts: n, of: pass), metric: metric, options: BackwardOptions(hookGradients: hooks))
        let (_, alone) = try model.gradients(Array(prompts.prefix(n)), metric: metric, backward: BackwardOptions(hookGradients: hooks))
        #expect(view.metric.count == n)
        var worst = 0.0
        for hook in hooks {
            #expect(view.hookGradients[hook]!.shape == alone.hookGradients[hook]!.shape, "\(hook)")
            worst = max(worst, Self.relativeDifference(view.hookGradients[hook]!.data, alone.hookGradients[hook]!.data))
        }
        print("\(name), first \(n) of 3 prompts: worst |view − alone| / scale \(String(format: "%.1e", worst))")
        #expect(worst <= 1e-6)
    }

    @Test(arguments: ["tiny-ln", "tiny-lnfree"], [nil, 5] as [Int?])
    func runsInOneBatchEqualRunsOneAtATime(name: String, igSteps: Int?) throws {
        let model = try Self.model(name)
        let together = try model.edgeAttribution(clean: Self.clean, corrupt: Self.corrupt, answer: 3290, wrong: 3797, igSteps: igSteps)
        var worst = 0.0
        for batch in [1, 2] {
            let apart = try model.edgeAttribution(clean: Self.clean, corrupt: Self.corrupt, answer: 3290, wrong: 3797,
                                                  igSteps: igSteps, batch: batch)
            worst = max(worst, Self.relativeDifference(together.values, apart.values))
        }
        // Not a vacuous comparison: the pair differs at position 6, and some edge scores are far from 0.
        #expect(together.values.contains { !$0.isNaN && abs($0) > 1e-3 })
        print("\(name) igSteps \(igSteps ?? 0): worst |one batch − batches of 1, 2| / scale \(String(format: "%.1e", worst))")
        #expect(worst <= 1e-6)
    }
}
