import Foundation
import GPT2
import Support
import Testing
import TensorCore
@testable import Training

/// The step's fused optimizer pass (clipping's coefficient applied inside AdamW's eight-lane
/// loop) against the separate passes it replaces: the same parameters bit for bit, and the
/// blocked norm against a plain Double sum. The reference numbers of AdamW itself are
/// `TrainingReferenceTests` (PyTorch's `AdamW`); these tests pin the rewrite to the old order.
@Suite struct OptimizerFusionTests {
    /// Gradients of every size class (tails shorter than eight lanes included), seeded.
    static func filled(_ p: ModelParameters, seed: UInt64, scale: Float) {
        var rng = SplitMix64(seed: seed)
        for i in 0..<p.table.count { p.arena.base[i] = (Float(rng.next() % 20_001) / 10_000 - 1) * scale }
    }

    /// The scalar loop AdamW ran before it took eight lanes: the oracle.
    static func scalarStep(_ p: ModelParameters, _ g: ModelParameters, m: ModelParameters, v: ModelParameters,
                           optimizer o: AdamW, t: Int, lr: Double) {
        let s = o.settings
        // 1 − β rounded from Double, as torch passes it (not 1 − Float(β)).
        let oneMinusB1 = Float(1 - s.beta1), b2 = Float(s.beta2), oneMinusB2 = Float(1 - s.beta2), eps = Float(s.eps)
        let stepSize = Float(lr / (1 - pow(s.beta1, Double(t)))), bc2Sqrt = Float((1 - pow(s.beta2, Double(t))).squareRoot())
        for e in p.table.checkpointEntries {
            let decay = o.decays(e) ? Float(1 - lr * s.weightDecay) : 1
            for i in e.offset..<(e.offset + e.count) {
                let gi = g.arena.base[i]
                p.arena.base[i] *= decay
                m.arena.base[i] += (gi - m.arena.base[i]) * oneMinusB1
                v.arena.base[i] = v.arena.base[i] * b2 + gi * gi * oneMinusB2
                p.arena.base[i] -= stepSize * m.arena.base[i] / (v.arena.base[i].squareRoot() / bc2Sqrt + eps)
            }
        }
    }

    @Test func fusedClipAndEightLanesEqualTheSeparateScalarPasses() throws {
        let table = try Fixtures.tinyModel().parameters.table
        let fused = try ModelParameters(table: table), oracle = try ModelParameters(table: table)
        let grads = try ModelParameters(table: table), clipped = try ModelParameters(table: table)
        Self.filled(fused, seed: 1, scale: 0.1)
        oracle.copy(from: fused)
        let optimizer = try AdamW(table: table, settings: AdamWSettings())
        let m = try ModelParameters(table: table), v = try ModelParameters(table: table)
        var clippedSteps = 0
        for t in 1...3 {
            Self.filled(grads, seed: UInt64(10 + t), scale: t == 2 ? 1e-4 : 1)  // step 2: below the clip
            clipped.copy(from: grads)
            let norm = clipGradientNorm(clipped, maxNorm: 1)
            let k = gradientClipScale(norm: gradientNorm(grads), maxNorm: 1)
            if k < 1 { clippedSteps += 1 }
            optimizer.step(fused, grads: grads, lr: 6e-4, gradScale: k)
            Self.scalarStep(oracle, clipped, m: m, v: v, optimizer: optimizer, t: t, lr: 6e-4)
            #expect(norm == gradientNorm(grads))
            let same = (0..<table.count).allSatisfy { fused.arena.base[$0].bitPattern == oracle.arena.base[$0].bitPattern }
            #expect(same, "step \(t): fused AdamW differs from clip-then-scalar AdamW")
        }
        #expect(clippedSteps == 2)
    }

    @Test func blockedNormMatchesADoubleSum() throws {
        let grads = try ModelParameters(table: try Fixtures.tinyModel().parameters.table)
        Self.filled(grads, seed: 7, scale: 3)
        var exact = 0.0
        for e in grads.table.checkpointEntries {
            for i in e.offset..<(e.offset + e.count) { exact += Double(grads.arena.base[i]) * Double(grads.arena.base[i]) }
        }
        let norm = gradientNorm(grads)
        #expect(abs(norm - exact.squareRoot()) <= 1e-6 * exact.squareRoot(), "blocked \(norm) vs Double \(exact.squareRoot())")
    }
}
