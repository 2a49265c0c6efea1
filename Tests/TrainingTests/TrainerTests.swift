import Foundation
import GPT2
import Testing
import TensorCore
@testable import Training

@Suite(.serialized) struct TrainerTests {
    func settings(steps: Int, aux: Double = 0) -> TrainingSettings {
        TrainingSettings(seqLen: 16, sequencesPerStep: 4, microBatch: 2, steps: steps, seed: 3,
                         learningRate: LearningRateSchedule(peak: 1e-2, floor: 5e-3, warmupSteps: 1, totalSteps: steps),
                         auxWeight: aux)
    }

    @Test func sameSeedSameParameters() throws {
        let corpus = try Fixtures.heldout()
        var bits: [[UInt32]] = []
        for _ in 0..<2 {
            let t = try Trainer(model: try Fixtures.tinyModel(), corpus: corpus, settings: settings(steps: 3), layerNorms: nil)
            for _ in 0..<3 { try t.runStep() }
            bits.append(parameterBits(t.model))
        }
        #expect(bits[0] == bits[1])
    }

    @Test func lossFalls() throws {
        let corpus = try Fixtures.heldout()
        var s = settings(steps: 12)
        s.sequencesPerStep = 2
        let t = try Trainer(model: try Fixtures.tinyModel(), corpus: corpus, settings: s, layerNorms: nil)
        // Twelve steps on the same two sequences: the loss must fall.
        t.order = BlockOrder(blocks: 2, seed: 0)
        let losses = try (0..<12).map { _ in try t.runStep().loss }
        #expect(losses.last! < losses.first! - 0.5, "losses \(losses)")
    }

    /// A checkpoint after step 2 restored into a fresh trainer continues to the very bits of an
    /// uninterrupted run (removing LayerNorm, so that σ state is part of it).
    @Test func resumeIsBitIdentical() throws {
        let corpus = try Fixtures.heldout()
        let schedule = RemovalSchedule(nLayers: 2, ln2Start: 1, ln2Gap: 1, ln1QKGap: 1, ln1VGap: 1)
        func trainer() throws -> Trainer {
            try Trainer(model: try Fixtures.tinyModel(), corpus: corpus, settings: settings(steps: 9, aux: 0.1),
                        layerNorms: FakeLayerNorms(schedule: schedule))
        }
        let straight = try trainer()
        let straightLosses = try (0..<9).map { _ in try straight.runStep().loss }

        let folder = try temporaryFolder("resume")
        defer { try? FileManager.default.removeItem(at: folder) }
        let first = try trainer()
        for _ in 0..<4 { try first.runStep() }
        try TrainingCheckpoint.save(first, out: folder, runID: 7, corpusHash: corpus.hash, seconds: 1)
        let latest = try #require(TrainingCheckpoint.latest(out: folder))
        let state = try TrainingCheckpoint.read(latest)
        #expect(state.stepsDone == 4 && state.runID == 7)
        let second = try trainer()
        try state.restore(into: second, from: latest)
        let rest = try (4..<9).map { _ in try second.runStep().loss }
        #expect(parameterBits(second.model) == parameterBits(straight.model))
        #expect(rest == Array(straightLosses[4...]))
        #expect(second.layerNorms == straight.layerNorms)
    }

    /// The LN-free export (ε = 1e12, weights × 1e6/σ) loaded back as an ordinary checkpoint gives
    /// the FakeLN model's logits.
    @Test func lnFreeExportEqualsFakeLN() throws {
        let corpus = try Fixtures.heldout()
        let schedule = RemovalSchedule(nLayers: 2, ln2Start: 1, ln2Gap: 1, ln1QKGap: 1, ln1VGap: 1)
        let t = try Trainer(model: try Fixtures.tinyModel(), corpus: corpus, settings: settings(steps: 9, aux: 0.1),
                            layerNorms: FakeLayerNorms(schedule: schedule))
        for _ in 0..<9 { try t.runStep() }
        let ln = try #require(t.layerNorms)
        #expect(ln.allRemoved(at: 9))
        let tokens = t.batch(at: 100)
        let fake = try t.model.run(tokens, ForwardOptions(logits: .all, layerNorms: ln.plan(at: 9, eps: 1e-5)))

        let weights = try ModelParameters(table: t.model.parameters.table)
        weights.copy(from: t.model.parameters)
        let config = ln.encodeLNFree(weights, config: t.model.config)
        let folder = try temporaryFolder("lnfree")
        defer { try? FileManager.default.removeItem(at: folder) }
        try CheckpointExport.write(weights, config: config, into: folder, tokenizerFrom: nil)
        let loaded = try GPT2Model(checkpoint: Checkpoint.open(folder.path), processing: .none)
        #expect(loaded.lnMode == .lnFree)
        let exported = try loaded.run(tokens, ForwardOptions(logits: .all))
        var worst: Float = 0, scale: Float = 0
        for i in 0..<(fake.logitRows.count * 50257) {
            worst = max(worst, abs(fake.logits[i] - exported.logits[i]))
            scale = max(scale, abs(fake.logits[i]))
        }
        #expect(worst <= 1e-4, "max |Δlogit| \(worst) (logits up to \(scale))")
    }

    @Test func badInputIsOneClearError() throws {
        let corpus = try Fixtures.heldout()
        var s = settings(steps: 5)
        s.sequencesPerStep = 100_000
        #expect(throws: TrainingError.self) { try Trainer(model: try Fixtures.tinyModel(), corpus: corpus, settings: s, layerNorms: nil) }
        #expect(throws: TrainingError.scheduleTooLong(lastEvent: 34, what: "ln_f removed", option: "--schedule-steps", steps: 5)) {
            try Trainer(model: try Fixtures.tinyModel(), corpus: corpus, settings: settings(steps: 5),
                        layerNorms: FakeLayerNorms(schedule: RemovalSchedule(nLayers: 2)))
        }
        var long = settings(steps: 5)
        long.seqLen = 33
        #expect(throws: TrainingError.seqLenTooLong(seqLen: 33, nCtx: 32)) {
            try Trainer(model: try Fixtures.tinyModel(), corpus: corpus, settings: long, layerNorms: nil)
        }
    }

    /// `decayLayerNormWeights`: the LayerNorm weights (not biases) are decayed too, as Hugging Face
    /// Trainer decays the companion's FakeLayerNorm modules; by default only rank-2 tensors are.
    @Test func layerNormWeightDecayIsAnOption() throws {
        let model = try Fixtures.tinyModel()
        let names = ["h.0.ln_1.weight", "h.1.ln_2.weight", "ln_f.weight", "h.0.ln_1.bias", "ln_f.bias", "wpe.weight"]
        for decayLN in [false, true] {
            var settings = AdamWSettings()
            (settings.weightDecay, settings.decayLayerNormWeights) = (0.1, decayLN)
            let params = try ModelParameters(table: model.parameters.table), grads = try ModelParameters(table: model.parameters.table)
            params.copy(from: model.parameters)
            grads.arena.base.update(repeating: 0, count: grads.table.count)
            let adam = try AdamW(table: params.table, settings: settings)
            adam.step(params, grads: grads, lr: 0.5)
            for name in names {
                let e = params.table.entry(name)!
                let decayed = name == "wpe.weight" || (decayLN && name.hasSuffix(".weight"))
                #expect(adam.decays(e) == decayed, "\(name)")
                let before = model.parameters.arena.base + e.offset, after = params.arena.base + e.offset
                for i in 0..<e.count { #expect(after[i] == (decayed ? before[i] * Float(1 - 0.5 * 0.1) : before[i]), "\(name)[\(i)]") }
            }
        }
    }
}
