import Foundation
@testable import GPT2
import TensorCore
import Testing

/// Edge attribution runs its gradient runs (the corrupted one, the IG steps) as the prompts of one
/// batch, and the clean run only from the first differing position, on the corrupted run's keys
/// and values before it: both against the same computed one run at a time and over every
/// position, on the LayerNorm model and its LN-free twin.
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

    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func cleanRowsOnTheCorruptedPrefixEqualTheWholeCleanRun(name: String) throws {
        let model = try Self.model(name), graph = model.edgeGraph, C = model.config.dModel, T = Self.clean.count
        let runs = AttributionRuns(clean: Self.clean, corrupt: Self.corrupt, steps: 1, model: model)
        let (corrupted, _) = try model.attributionPass(runs, [0], answer: 3290, wrong: 3797)
        let rows = try model.cleanNodeActivations(runs, corrupted: corrupted, graph)
        let whole = try model.nodeActivations(Self.clean, graph)
        let R = T - runs.from
        #expect(runs.from == 6 && rows.count == graph.upstream.count * R * C)
        let wanted = graph.upstream.indices.flatMap { u in whole[((u * T + runs.from) * C)..<((u + 1) * T * C)] }
        let worst = Self.relativeDifference(rows, wanted)
        print("\(name): worst |clean rows from \(runs.from) − whole clean run| / scale \(String(format: "%.1e", worst))")
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
