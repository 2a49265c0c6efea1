/// The training recipes of `train` and `remove-ln`: what each uses for an option that is not
/// given. `remove-ln` is the paper's (Baroni et al. 2025): AdamW at 6e-4, cosine to 3e-4 after 20
/// warm-up steps, decay 0.01, clipping 1.0, 0.1 · the spread of σ at ln_f's input added to the
/// loss, σ a moving average with momentum 0.9, the removal schedule of `RemovalSchedule`'s
/// defaults and the schedule's last removal + 196 steps (300 for 12 layers). `train` continues or
/// starts a model as nanoGPT does: 1000 steps at 6e-4, cosine to a tenth after min(100, steps/10)
/// warm-up steps.
public struct TrainingRecipe: Sendable, Equatable {
    public var steps: Int
    public var lr: Double
    public var minLr: Double
    public var warmup: Int

    /// Shared by both recipes.
    public static let seqLen = 128, batchTokens = 16384, microBatch = 8, weightDecay = 0.01, maxGradNorm = 1.0
    /// `remove-ln`'s auxiliary-loss weight and σ momentum.
    public static let auxWeight = 0.1, momentum = 0.9
    /// `remove-ln`'s schedule for GPT-2 small (its starts and gaps are every model's defaults).
    public static let paperSchedule = RemovalSchedule(nLayers: 12)

    /// `train`, with each value that is given.
    public static func train(steps: Int?, lr: Double?, minLr: Double?, warmup: Int?) -> TrainingRecipe {
        let steps = steps ?? 1000, lr = lr ?? 6e-4
        return TrainingRecipe(steps: steps, lr: lr, minLr: minLr ?? lr / 10, warmup: warmup ?? min(100, steps / 10))
    }

    /// `remove-ln` on `schedule`, with each value that is given.
    public static func removeLN(schedule: RemovalSchedule, steps: Int?, lr: Double?, minLr: Double?,
                                warmup: Int?) -> TrainingRecipe {
        TrainingRecipe(steps: steps ?? schedule.defaultTotalSteps, lr: lr ?? 6e-4, minLr: minLr ?? 3e-4, warmup: warmup ?? 20)
    }

    /// The trainer's settings for this recipe and the batch, seed and optimizer options.
    public func settings(seqLen: Int, batchTokens: Int, microBatch: Int, seed: UInt64, weightDecay: Double,
                         maxGradNorm: Double, auxWeight: Double) -> TrainingSettings {
        var adam = AdamWSettings()
        adam.weightDecay = weightDecay
        return TrainingSettings(seqLen: seqLen, sequencesPerStep: batchTokens / seqLen, microBatch: microBatch, steps: steps,
                                seed: seed, learningRate: LearningRateSchedule(peak: lr, floor: minLr, warmupSteps: warmup, totalSteps: steps),
                                adamW: adam, maxGradNorm: maxGradNorm, auxWeight: auxWeight)
    }
}
