import Foundation
import GPT2
import Testing
@testable import Training

/// The published recipes against the companion's own `config.py` (values extracted by
/// scripts/reference/make_recipe_fixtures.py into companion_recipes.json), the scaling rule to
/// other depths, and `train`'s defaults.
@Suite struct RecipeTests {
    struct Companion: Decodable {
        let config: String, n_layers: Int, max_steps: Int, early_stop_step: Int, warmup_steps: Int
        let learning_rate: Double, min_lr: Double, weight_decay: Double, aux_loss_weight: Double, momentum: Double
        let batch_size: Int, sequences_per_step: Int, block_size: Int
        let start_ln2: Int, gap_ln2: Int, start_ln1qk: Int, gap_ln1qk: Int, start_ln1v: Int, gap_ln1v: Int, start_lnf: Int
        let removal_steps: [String: Int]
    }

    static let companion: [String: Companion] = {
        struct File: Decodable { let recipes: [String: Companion] }
        let data = try! Data(contentsOf: Fixtures.reference("training/companion_recipes.json"))
        return try! JSONDecoder().decode(File.self, from: data).recipes
    }()

    static let published: [RemovalRecipe.Name] = [.gpt2, .gpt2Medium, .gpt2Large, .gpt2XL]

    @Test(arguments: published)
    func publishedRecipeIsConfigPy(name: RemovalRecipe.Name) throws {
        let c = try #require(Self.companion[name.rawValue])
        let r = RemovalRecipe.named(name)
        #expect(r.companionConfig == c.config && r.nLayers == c.n_layers && !r.anyDepth)
        #expect(r.scheduleSteps == c.max_steps && r.warmup == c.warmup_steps)
        #expect(r.stopAt == nil && c.early_stop_step >= c.max_steps, "config.py stops \(c.config) early at \(c.early_stop_step)")
        #expect(r.lr == c.learning_rate && r.minLr == c.min_lr && r.weightDecay == c.weight_decay && r.auxWeight == c.aux_loss_weight)
        #expect(abs(r.momentum - c.momentum) <= 1e-15, "momentum \(r.momentum) vs \(c.momentum)")
        #expect(r.momentumSequences == c.batch_size && r.sequencesPerStep == c.sequences_per_step && r.seqLen == c.block_size)
        let s = r.schedule
        let got: [Int] = [s.ln2Start, s.ln2Gap, s.ln1QKStart, s.ln1QKGap, s.ln1VStart, s.ln1VGap, s.lnFinalStep]
        let want: [Int] = [c.start_ln2, c.gap_ln2, c.start_ln1qk, c.gap_ln1qk, c.start_ln1v, c.gap_ln1v, c.start_lnf]
        #expect(got == want)
        let events = Dictionary(uniqueKeysWithValues: s.events.map { ($0.path.name, $0.step) })
        #expect(events == c.removal_steps)
    }

    /// `quick` keeps lnlens's former defaults (what `make models` used): gpt2's schedule and its
    /// steps after ln_f at any depth, 20 warm-up steps, 128-token sequences, 16,384 tokens a step.
    @Test func quickIsTheFormerDefault() throws {
        let gpt2 = try #require(Self.companion["gpt2"])
        let quick = RemovalRecipe.named(.quick)
        #expect(quick.anyDepth && quick.companionConfig == nil)
        #expect(quick.stepsAfterLnFinal == gpt2.max_steps - gpt2.start_lnf)
        #expect(quick.warmup == 20 && quick.lr == 6e-4 && quick.minLr == 3e-4 && quick.auxWeight == 0.1 && quick.momentum == 0.9)
        #expect(quick.seqLen == TrainingRecipe.seqLen && quick.tokensPerStep == TrainingRecipe.batchTokens)
        let four = try quick.forModel("tiny", nLayers: 4, scaled: false)
        #expect(four.schedule.lnFinalStep == 48 && four.scheduleSteps == 48 + quick.stepsAfterLnFinal)
    }

    /// The scaling rule keeps starts, gaps and the steps after ln_f; at its own depth it is the
    /// identity; the removal phase grows by the per-block gaps.
    @Test(arguments: published)
    func scalingRule(name: RemovalRecipe.Name) throws {
        let r = RemovalRecipe.named(name)
        let c = try #require(Self.companion[name.rawValue])
        #expect(r.scaled(to: r.nLayers) == r)
        for n in [2, 4, 30] {
            let s = r.scaled(to: n)
            let sched = s.schedule
            #expect(sched.nLayers == n && sched.ln2Start == c.start_ln2 && sched.ln2Gap == c.gap_ln2)
            #expect(sched.lnFinalStep == c.start_ln2 + n * (c.gap_ln2 + c.gap_ln1qk + c.gap_ln1v))
            #expect(s.scheduleSteps - sched.lnFinalStep == c.max_steps - c.start_lnf)
            #expect(s.lr == r.lr && s.warmup == r.warmup && s.tokensPerStep == r.tokensPerStep && s.momentum == r.momentum)
        }
    }

    @Test func wrongDepthIsRefusedWithTheScaledNumbers() throws {
        let r = RemovalRecipe.named(.gpt2)
        #expect(throws: TrainingError.recipeDepth(recipe: "gpt2", config: "gpt2_aux", recipeLayers: 12, model: "m", modelLayers: 4,
                                                  tail: 196, lnFinal: 48, steps: 244)) {
            try r.forModel("m", nLayers: 4, scaled: false)
        }
        do {
            _ = try r.forModel("m", nLayers: 4, scaled: false)
        } catch {
            let message = error.errorDescription ?? ""
            #expect(message.contains("--scaled") && message.contains("12-layer") && message.contains("m has 4 layers")
                    && message.contains("ln_f at step 48, 244 steps"), "\(message)")
        }
        #expect(try r.forModel("m", nLayers: 4, scaled: true) == r.scaled(to: 4))
        #expect(try r.forModel("m", nLayers: 12, scaled: false) == r)
    }

    /// A horizon given replaces the recipe's; a schedule option moves the default horizon with ln_f.
    @Test func horizonFollowsTheSchedule() {
        var r = RemovalRecipe.named(.quick).scaled(to: 2)
        r.ln2Gap = 1
        #expect(r.scheduleSteps == r.schedule.lnFinalStep + 196)
        r.givenScheduleSteps = 40
        #expect(r.scheduleSteps == 40 && r.training.steps == 40 && r.training.stepsRun == 40)
    }

    @Test func stopAtKeepsTheHorizon() {
        let recipe = TrainingRecipe(steps: 300, lr: 6e-4, minLr: 3e-4, warmup: 25, stopAt: 120)
        let s = recipe.settings(seqLen: 16, batchTokens: 64, microBatch: 2, seed: 1, weightDecay: 0.01, maxGradNorm: 1, auxWeight: 0)
        #expect(s.steps == 120 && s.learningRate == LearningRateSchedule(peak: 6e-4, floor: 3e-4, warmupSteps: 25, totalSteps: 300))
    }

    @Test func trainScalesWarmupAndFloor() {
        #expect(TrainingRecipe.train(steps: nil, lr: nil, minLr: nil, warmup: nil) == TrainingRecipe(steps: 1000, lr: 6e-4, minLr: 6e-4 / 10, warmup: 100))
        #expect(TrainingRecipe.train(steps: 300, lr: 3e-3, minLr: nil, warmup: nil) == TrainingRecipe(steps: 300, lr: 3e-3, minLr: 3e-3 / 10, warmup: 30))
        let settings = TrainingRecipe.train(steps: 10, lr: nil, minLr: nil, warmup: nil)
            .settings(seqLen: 64, batchTokens: 256, microBatch: 2, seed: 3, weightDecay: 0.1, maxGradNorm: 0.5, auxWeight: 0)
        #expect(settings.sequencesPerStep == 4 && settings.learningRate == LearningRateSchedule(peak: 6e-4, floor: 6e-4 / 10, warmupSteps: 1, totalSteps: 10))
        #expect(settings.adamW.weightDecay == 0.1 && settings.maxGradNorm == 0.5 && settings.seed == 3)
    }
}
