import Foundation

/// The optimizer part of a recipe of `train` or `remove-ln`: the learning-rate schedule and how
/// long to run. `steps` is the schedule's horizon (the cosine reaches `minLr` there); `stopAt`,
/// when set, ends the training earlier with the learning rates of that horizon (the companion
/// code's `early_stop_step`). `train` continues or starts a model as nanoGPT does: 1000 steps at
/// 6e-4, cosine to a tenth after min(100, steps/10) warm-up steps.
public struct TrainingRecipe: Sendable, Equatable {
    /// Steps of the learning-rate schedule (`--schedule-steps`, formerly `--steps`).
    public var steps: Int
    public var lr: Double
    public var minLr: Double
    public var warmup: Int
    /// Stop after this many steps (`--stop-at`); nil: at the schedule's end.
    public var stopAt: Int?

    public init(steps: Int, lr: Double, minLr: Double, warmup: Int, stopAt: Int? = nil) {
        (self.steps, self.lr, self.minLr, self.warmup, self.stopAt) = (steps, lr, minLr, warmup, stopAt)
    }

    /// `train`'s batch and optimizer defaults (`remove-ln` takes them from its `RemovalRecipe`).
    public static let seqLen = 128, batchTokens = 16384, microBatch = 8, weightDecay = 0.01, maxGradNorm = 1.0

    /// The steps a training runs.
    public var stepsRun: Int { stopAt ?? steps }

    /// `train`, with each value that is given.
    public static func train(steps: Int?, lr: Double?, minLr: Double?, warmup: Int?, stopAt: Int? = nil) -> TrainingRecipe {
        let steps = steps ?? 1000, lr = lr ?? 6e-4
        return TrainingRecipe(steps: steps, lr: lr, minLr: minLr ?? lr / 10, warmup: warmup ?? min(100, steps / 10), stopAt: stopAt)
    }

    /// The trainer's settings for this recipe and the batch, seed and optimizer options.
    public func settings(seqLen: Int, batchTokens: Int, microBatch: Int, seed: UInt64, weightDecay: Double,
                         maxGradNorm: Double, auxWeight: Double) -> TrainingSettings {
        var adam = AdamWSettings()
        adam.weightDecay = weightDecay
        return TrainingSettings(seqLen: seqLen, sequencesPerStep: batchTokens / seqLen, microBatch: microBatch, steps: stepsRun,
                                seed: seed, learningRate: LearningRateSchedule(peak: lr, floor: minLr, warmupSteps: warmup, totalSteps: steps),
                                adamW: adam, maxGradNorm: maxGradNorm, auxWeight: auxWeight)
    }
}

/// A recipe of `remove-ln` (`--recipe`): every number of a LayerNorm removal. Four reproduce the
/// paper's runs, the companion code's `config.py` entries `gpt2_aux`, `gpt2-medium_fasttune_aux`,
/// `gpt2-large_aux` and `gpt2-xl_aux` (Baroni et al. 2025, submarat/removing-layer-norm at
/// a15a638); `quick`, the default, is `gpt2`'s schedule on a CPU-sized batch, at any depth.
///
/// The scaling rule, for a depth the recipe was not made for: every number is kept — starts,
/// per-block gaps, the steps of the learning-rate schedule after `ln_f`'s removal, learning
/// rates, batch, σ momentum — so each LayerNorm gets as many steps to adapt as in the published
/// run and the removal phase grows by the gaps of each extra block. At its own depth the rule
/// gives the recipe itself. `quick` applies at any depth by it; the published recipes only with
/// `--scaled`.
public struct RemovalRecipe: Sendable, Equatable {
    public enum Name: String, CaseIterable, Sendable, Codable {
        case quick, gpt2, gpt2Medium = "gpt2-medium", gpt2Large = "gpt2-large", gpt2XL = "gpt2-xl"
    }

    public var name: Name
    /// The companion `config.py` entry reproduced (nil: lnlens's own).
    public var companionConfig: String?
    /// The depth the numbers are for.
    public var nLayers: Int
    /// Whether the recipe applies at any depth by the scaling rule without `--scaled`.
    public var anyDepth: Bool
    /// Steps of the learning-rate schedule after `ln_f`'s removal step (the scaling rule keeps them).
    public var stepsAfterLnFinal: Int
    /// A horizon given explicitly (`--schedule-steps`), which replaces `lnFinalStep + stepsAfterLnFinal`.
    public var givenScheduleSteps: Int?
    /// Stop early (`--stop-at`; the companion's `early_stop_step`, which none of its runs sets).
    public var stopAt: Int?
    public var warmup: Int
    public var lr: Double
    public var minLr: Double
    public var weightDecay: Double
    public var auxWeight: Double
    /// σ's momentum, as the companion applies it: once per forward call of `momentumSequences`
    /// sequences (its micro-batch). The trainer scales it to its own micro-batch
    /// (`FakeLayerNorms.update(microBatch:sequences:step:)`), or with `--sigma-update step` applies
    /// it as is once per optimizer step.
    public var momentum: Double
    public var momentumSequences: Int
    public var ln2Start: Int, ln2Gap: Int, ln1QKGap: Int, ln1VGap: Int
    /// Starts of the later kinds (nil: where the previous kind ends, as `config.py` chains them).
    public var ln1QKStart: Int?, ln1VStart: Int?, lnFinalStep: Int?
    public var seqLen: Int
    public var sequencesPerStep: Int

    public var tokensPerStep: Int { seqLen * sequencesPerStep }

    public var schedule: RemovalSchedule {
        RemovalSchedule(nLayers: nLayers, ln2Start: ln2Start, ln2Gap: ln2Gap, ln1QKStart: ln1QKStart, ln1QKGap: ln1QKGap,
                        ln1VStart: ln1VStart, ln1VGap: ln1VGap, lnFinalStep: lnFinalStep)
    }

    /// The horizon of the learning-rate schedule (`--schedule-steps`).
    public var scheduleSteps: Int { givenScheduleSteps ?? schedule.lnFinalStep + stepsAfterLnFinal }

    /// The learning rates and steps to run.
    public var training: TrainingRecipe {
        TrainingRecipe(steps: scheduleSteps, lr: lr, minLr: minLr, warmup: warmup, stopAt: stopAt)
    }
}

extension RemovalRecipe {
    /// The recipe called `name`, at its own depth.
    public static func named(_ name: Name) -> RemovalRecipe {
        switch name {
        case .quick:
            var r = named(.gpt2)
            (r.name, r.companionConfig, r.anyDepth, r.warmup) = (.quick, nil, true, 20)
            (r.seqLen, r.sequencesPerStep, r.momentumSequences) = (128, 128, 128)
            return r
        case .gpt2:
            return companion(.gpt2, "gpt2_aux", layers: 12, steps: 300, warmup: 25, lr: 6e-4, minLr: 3e-4, aux: 0.1,
                             micro: 32, momentum: 0.9, accumulation: 16, start: 20, gaps: (2, 2, 3))
        case .gpt2Medium:
            return companion(.gpt2Medium, "gpt2-medium_fasttune_aux", layers: 24, steps: 500, warmup: 10, lr: 6e-4, minLr: 3e-4,
                             aux: 0.1, micro: 22, momentum: 0.9, accumulation: 23, start: 20, gaps: (2, 2, 3))
        case .gpt2Large:
            return companion(.gpt2Large, "gpt2-large_aux", layers: 36, steps: 1200, warmup: 15, lr: 3e-4, minLr: 4e-5, aux: 0.03,
                             micro: 28, momentum: pow(0.9, 28.0 / 32), accumulation: 18, start: 30, gaps: (4, 4, 6))
        case .gpt2XL:
            return companion(.gpt2XL, "gpt2-xl_aux", layers: 48, steps: 1200, warmup: 20, lr: 1e-4, minLr: 2e-5, aux: 0.01,
                             micro: 18, momentum: pow(0.9, 18.0 / 32), accumulation: 28, start: 50, gaps: (4, 4, 6))
        }
    }

    /// A `config.py` entry in its own terms: `micro` is its `batch_size` and `accumulation` its
    /// `gradient_accumulation_steps` (int(512 // batch_size): 506 or 504 sequences for medium,
    /// large and xl, not quite the 2^19 tokens targeted); 1024-token blocks, weight decay 0.01.
    static func companion(_ name: Name, _ config: String, layers: Int, steps: Int, warmup: Int, lr: Double, minLr: Double,
                          aux: Double, micro: Int, momentum: Double, accumulation: Int, start: Int,
                          gaps: (ln2: Int, ln1QK: Int, ln1V: Int)) -> RemovalRecipe {
        let lnFinal = RemovalSchedule(nLayers: layers, ln2Start: start, ln2Gap: gaps.ln2, ln1QKGap: gaps.ln1QK,
                                      ln1VGap: gaps.ln1V).lnFinalStep
        return RemovalRecipe(name: name, companionConfig: config, nLayers: layers, anyDepth: false,
                             stepsAfterLnFinal: steps - lnFinal, givenScheduleSteps: nil, stopAt: nil, warmup: warmup, lr: lr,
                             minLr: minLr, weightDecay: 0.01, auxWeight: aux, momentum: momentum, momentumSequences: micro,
                             ln2Start: start, ln2Gap: gaps.ln2, ln1QKGap: gaps.ln1QK, ln1VGap: gaps.ln1V,
                             seqLen: 1024, sequencesPerStep: micro * accumulation)
    }

    /// This recipe by the scaling rule at `nLayers` (itself at its own depth).
    public func scaled(to nLayers: Int) -> RemovalRecipe {
        var r = self
        r.nLayers = nLayers
        return r
    }

    /// This recipe for a model of `nLayers` layers (named `model` in the error): itself at its own
    /// depth; by the scaling rule when the recipe applies at any depth or `scaled` is given;
    /// otherwise refused, the error saying what the scaling rule would give.
    public func forModel(_ model: String, nLayers: Int, scaled: Bool) throws(TrainingError) -> RemovalRecipe {
        if nLayers == self.nLayers || anyDepth || scaled { return self.scaled(to: nLayers) }
        let s = self.scaled(to: nLayers)
        throw .recipeDepth(recipe: name.rawValue, config: companionConfig ?? name.rawValue, recipeLayers: self.nLayers,
                           model: model, modelLayers: nLayers, tail: stepsAfterLnFinal, lnFinal: s.schedule.lnFinalStep,
                           steps: s.scheduleSteps)
    }
}
