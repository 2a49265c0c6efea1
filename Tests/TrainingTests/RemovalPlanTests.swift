import Foundation
import GPT2
import Testing
import TensorCore
@testable import Training

/// `remove-ln --plan`, `--stop-at` and the checkpoints `--keep-all` keeps for `export --step`,
/// on tiny-ln (2 layers) with the schedule compressed to ln_2 at 1, 2, Q/K 3, 4, V 5, 6, ln_f 7.
@Suite(.serialized) struct RemovalPlanTests {
    static let schedule = RemovalSchedule(nLayers: 2, ln2Start: 1, ln2Gap: 1, ln1QKGap: 1, ln1VGap: 1)

    /// The quick recipe on tiny-ln: schedule compressed, 16-token sequences, 4 a step, horizon 12.
    static func recipe(stopAt: Int? = nil) -> RemovalRecipe {
        var r = RemovalRecipe.named(.quick).scaled(to: 2)
        (r.ln2Gap, r.ln1QKGap, r.ln1VGap, r.ln2Start) = (1, 1, 1, 1)
        (r.givenScheduleSteps, r.stopAt, r.warmup, r.seqLen, r.sequencesPerStep) = (12, stopAt, 2, 16, 4)
        return r
    }

    static func settings(_ r: RemovalRecipe) -> TrainingSettings {
        r.training.settings(seqLen: r.seqLen, batchTokens: r.tokensPerStep, microBatch: 2, seed: 3, weightDecay: r.weightDecay,
                            maxGradNorm: 1, auxWeight: r.auxWeight)
    }

    @Test func planHoldsTheScheduleTheRatesAndTheTokens() throws {
        let r = Self.recipe(stopAt: 10), s = Self.settings(r)
        #expect(r.schedule == Self.schedule)
        let model = try Fixtures.tinyModel()
        let plan = RemovalPlan(recipe: r, settings: s, layerNorms: FakeLayerNorms(schedule: r.schedule, momentum: r.momentum),
                               config: model.config, parameterFloats: model.parameters.table.count, corpusTokens: 1000)
        #expect(plan.removals == Self.schedule.events.map { RemovalPlan.Removal(step: $0.step, layerNorm: $0.path.name) })
        #expect(plan.phases.map(\.first) == [1, 3, 5, 7] && plan.phases.map(\.last) == [2, 4, 6, 7])
        #expect(plan.stepsRun == 10 && plan.scheduleSteps == 12 && plan.passesPerStep == 2)
        #expect(plan.tokensPerStep == 64 && plan.tokensTotal == 640)
        // The rates of the 12-step schedule, for the 10 steps run.
        let horizon = LearningRateSchedule(peak: r.lr, floor: r.minLr, warmupSteps: 2, totalSteps: 12)
        #expect(plan.lrPerStep == (0..<10).map { horizon.rate(at: $0) })
        #expect(plan.lrPerStep[9] != LearningRateSchedule(peak: r.lr, floor: r.minLr, warmupSteps: 2, totalSteps: 10).rate(at: 9))
        func point(_ what: String) -> RemovalPlan.Rate? { plan.lrKeyPoints.first { $0.what.contains(what) } }
        #expect(point("end of warm-up")?.lr == r.lr && point("schedule end, not run")?.step == 12)
        #expect(point("schedule end, not run").map { abs($0.lr - r.minLr) < 1e-15 } == true)
        #expect(point("ln_f removed")?.step == 7 && point("last step run")?.step == 9)
        #expect(point("ln_f removed")?.what == "cosine midpoint, ln_f removed")
        #expect(plan.lrKeyPoints.map(\.step) == plan.lrKeyPoints.map(\.step).sorted())
        let param = model.parameters.table.count * 4
        #expect(plan.memory.parameters == param && plan.memory.gradientsAndMoments == 3 * param)
        #expect(plan.memory.activations == ForwardPass.footprint(B: 2, T: 16, config: model.config, backward: true))
        #expect(plan.memory.total == 4 * param + plan.memory.activations && plan.time == nil)
        let timed = plan.measured(pass: 0.5, update: 0.25)
        #expect(timed.time?.stepSeconds == 1.25 && timed.time?.totalSeconds == 12.5)
        #expect(timed.time?.basis.contains("an estimate from one forward and backward pass of 2 × 16 tokens") == true)
    }

    /// `--plan --json`'s shape: snake_case keys, every step's rate, the removals as objects.
    @Test func planJSONShape() throws {
        let r = Self.recipe(), model = try Fixtures.tinyModel()
        let plan = RemovalPlan(recipe: r, settings: Self.settings(r), layerNorms: FakeLayerNorms(schedule: r.schedule),
                               config: model.config, parameterFloats: 10, corpusTokens: 100).measured(pass: 1, update: 1)
        let object = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(plan)) as? [String: Any])
        #expect(Set(object.keys) == ["recipe", "n_layers", "keep_ln", "schedule_steps", "steps_run", "warmup", "lr", "min_lr",
                                     "weight_decay", "aux_weight", "momentum", "momentum_sequences", "sigma_update", "momentum_per_update",
                                     "mask_eot_targets", "aux_target_skips_bos_eot", "decay_ln_weights", "dropout", "seq_len", "sequences_per_step",
                                     "micro_batch", "passes_per_step", "tokens_per_step", "tokens_total", "corpus_tokens", "removals",
                                     "phases", "lr_key_points", "lr_per_step", "memory", "time"])
        #expect((object["removals"] as? [[String: Any]])?.first.map { Set($0.keys) } == ["step", "layer_norm"])
        #expect(object["sigma_update"] as? String == "micro-batch")
        #expect((object["dropout"] as? [String: Double]) == ["embd_pdrop": 0, "attn_pdrop": 0, "resid_pdrop": 0])
        let perUpdate = try #require(object["momentum_per_update"] as? Double)
        #expect(abs(perUpdate - pow(r.momentum, Double(Self.settings(r).microBatch) / 32)) < 1e-12)
        #expect((object["lr_per_step"] as? [Double])?.count == 12)
        #expect((object["memory"] as? [String: Any]).map { Set($0.keys).isSuperset(of: ["parameters", "gradients_and_moments", "activations", "total", "fits"]) } == true)
        #expect((object["time"] as? [String: Any]).map { Set($0.keys) } == ["basis", "pass_seconds", "update_seconds", "step_seconds", "total_seconds"])
    }

    /// `--stop-at`: the trainer stops there, each step at the rate of the whole schedule.
    @Test func stopAtRunsTheFullHorizonsRates() throws {
        let r = Self.recipe(stopAt: 9), s = Self.settings(r)
        let t = try Trainer(model: try Fixtures.tinyModel(), corpus: try Fixtures.heldout(), settings: s,
                            layerNorms: FakeLayerNorms(schedule: r.schedule, momentum: r.momentum))
        var rates: [Double] = []
        while t.step < t.settings.steps { rates.append(try t.runStep().learningRate) }
        #expect(rates.count == 9 && rates == (0..<9).map { s.learningRate.rate(at: $0) } && s.learningRate.totalSteps == 12)
        #expect(throws: TrainingError.scheduleTooLong(lastEvent: 7, what: "ln_f removed", option: "--stop-at", steps: 7)) {
            try Trainer.check(model: try Fixtures.tinyModel(), corpus: try Fixtures.heldout(), settings: Self.settings(Self.recipe(stopAt: 7)),
                              layerNorms: FakeLayerNorms(schedule: Self.schedule))
        }
        let (pass, update) = try t.timeOnePass()
        #expect(pass > 0 && update > 0)
    }

    /// `--keep-all`: every checkpoint kept, older ones without moments; `exportStep` writes one
    /// as the training's own export does, and refuses a step before ln_f's removal or one not kept.
    @Test func keptCheckpointsExport() throws {
        let corpus = try Fixtures.heldout()
        let t = try Trainer(model: try Fixtures.tinyModel(), corpus: corpus, settings: Self.settings(Self.recipe()),
                            layerNorms: FakeLayerNorms(schedule: Self.schedule))
        let folder = try temporaryFolder("keepall")
        defer { try? FileManager.default.removeItem(at: folder) }
        let tokenizer = Fixtures.repo.appendingPathComponent("models/tokenizer")
        for stop in [4, 8, 9] {
            while t.step < stop { try t.runStep() }
            try TrainingCheckpoint.save(t, out: folder, runID: 1, corpusHash: corpus.hash, seconds: 0, keepAll: true, tokenizerFrom: tokenizer)
        }
        #expect(TrainingCheckpoint.kept(out: folder) == [4, 8, 9])
        #expect(TrainingCheckpoint.latest(out: folder)?.lastPathComponent == "step-000009")
        let step4 = TrainingCheckpoint.directory(out: folder).appendingPathComponent("step-000004")
        #expect(!FileManager.default.fileExists(atPath: step4.appendingPathComponent("adam_m.safetensors").path))
        let out = folder.appendingPathComponent("export9")
        try TrainingCheckpoint.exportStep(9, run: folder, to: out, precision: .f32, force: false, metadata: [:])
        let loaded = try GPT2Model(checkpoint: Checkpoint.open(out.path), processing: .none)
        #expect(loaded.lnMode == .lnFree && FileManager.default.fileExists(atPath: out.appendingPathComponent("vocab.json").path))
        let tokens = t.batch(at: 100)
        let fake = try t.model.run(tokens, ForwardOptions(logits: .all, layerNorms: t.layerNorms!.plan(at: 9, eps: 1e-5)))
        let exported = try loaded.run(tokens, ForwardOptions(logits: .all))
        let worst = (0..<(fake.logitRows.count * 50257)).map { abs(fake.logits[$0] - exported.logits[$0]) }.max()!
        #expect(worst <= 1e-4, "max |Δlogit| \(worst)")
        #expect(throws: TrainingError.removalIncomplete(checkpoint: step4.path, stepsDone: 4, pending: "h.1.ln_1.qk", at: 4)) {
            try TrainingCheckpoint.exportStep(4, run: folder, to: folder.appendingPathComponent("e4"), precision: .f32, force: false, metadata: [:])
        }
        #expect(throws: TrainingError.checkpointStepMissing(directory: TrainingCheckpoint.directory(out: folder).path, step: 7, kept: [4, 8, 9])) {
            try TrainingCheckpoint.exportStep(7, run: folder, to: folder.appendingPathComponent("e7"), precision: .f32, force: false, metadata: [:])
        }
    }
}
