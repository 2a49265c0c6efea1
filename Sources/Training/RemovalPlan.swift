import Foundation
import GPT2
import TensorCore

/// A LayerNorm removal laid out before it runs (`remove-ln --plan`): when each LayerNorm goes,
/// the learning rate of every step, the tokens, the memory a step needs and — from one measured
/// pass — the time this machine needs. Encoded as `remove-ln --plan --json` prints it.
public struct RemovalPlan: Encodable, Sendable {
    /// One LayerNorm path and the 0-based step from which it is fake.
    public struct Removal: Encodable, Sendable, Equatable {
        public var step: Int
        public var layerNorm: String
        enum CodingKeys: String, CodingKey { case step, layerNorm = "layer_norm" }
    }

    /// One kind of removal in compact form: block i at `first + gap·i`, up to `last`.
    public struct Phase: Encodable, Sendable, Equatable {
        public var kind: String
        public var first: Int
        public var gap: Int
        public var last: Int
    }

    /// A step of the learning-rate schedule worth naming, and its rate.
    public struct Rate: Encodable, Sendable, Equatable {
        public var step: Int
        public var lr: Double
        public var what: String
    }

    /// Bytes: the parameters (loaded already), their gradients and AdamW's two moments, and one
    /// micro-batch's forward and backward (`ForwardPass.footprint`); `fits` compares the last two
    /// with what the machine has available.
    public struct Memory: Encodable, Sendable, Equatable {
        public var parameters: Int
        public var gradientsAndMoments: Int
        public var activations: Int
        public var total: Int
        public var available: Int?
        public var fits: Bool
        enum CodingKeys: String, CodingKey {
            case parameters, gradientsAndMoments = "gradients_and_moments", activations, total, available, fits
        }
    }

    /// The estimate of the run's duration from one measured pass and update.
    public struct Time: Encodable, Sendable, Equatable {
        public var basis: String
        public var passSeconds: Double
        public var updateSeconds: Double
        public var stepSeconds: Double
        public var totalSeconds: Double
        enum CodingKeys: String, CodingKey {
            case basis, passSeconds = "pass_seconds", updateSeconds = "update_seconds", stepSeconds = "step_seconds"
            case totalSeconds = "total_seconds"
        }
    }

    public var recipe: String
    public var companionConfig: String?
    public var nLayers: Int
    public var keepLN: Bool
    public var scheduleSteps: Int
    public var stepsRun: Int
    public var warmup: Int
    public var lr: Double
    public var minLr: Double
    public var weightDecay: Double
    public var auxWeight: Double
    public var momentum: Double
    public var momentumSequences: Int
    /// `--sigma-update` and the momentum of one update of `ln_2`/`ln_f` (`ln_1`'s: its cube with micro-batch updates).
    public var sigmaUpdate: String
    public var momentumPerUpdate: Double
    /// The companion's numerics: EOT targets masked, aux target without BOS/EOT, LN weights decayed.
    public var maskEOTTargets: Bool
    public var auxTargetSkipsBOSAndEOT: Bool
    public var decayLNWeights: Bool
    /// Dropout in the training passes (`embd_pdrop`, `attn_pdrop`, `resid_pdrop`; all 0: none).
    public var dropout: DropoutRates
    public var seqLen: Int
    public var sequencesPerStep: Int
    public var microBatch: Int
    public var passesPerStep: Int
    public var tokensPerStep: Int
    public var tokensTotal: Int
    public var corpusTokens: Int
    public var removals: [Removal]
    public var phases: [Phase]
    public var lrKeyPoints: [Rate]
    public var lrPerStep: [Double]
    public var memory: Memory
    public var time: Time?

    enum CodingKeys: String, CodingKey {
        case recipe, companionConfig = "companion_config", nLayers = "n_layers", keepLN = "keep_ln"
        case scheduleSteps = "schedule_steps", stepsRun = "steps_run", warmup, lr, minLr = "min_lr"
        case weightDecay = "weight_decay", auxWeight = "aux_weight", momentum, momentumSequences = "momentum_sequences"
        case sigmaUpdate = "sigma_update", momentumPerUpdate = "momentum_per_update", maskEOTTargets = "mask_eot_targets"
        case auxTargetSkipsBOSAndEOT = "aux_target_skips_bos_eot", decayLNWeights = "decay_ln_weights", dropout
        case seqLen = "seq_len", sequencesPerStep = "sequences_per_step", microBatch = "micro_batch"
        case passesPerStep = "passes_per_step", tokensPerStep = "tokens_per_step", tokensTotal = "tokens_total"
        case corpusTokens = "corpus_tokens", removals, phases, lrKeyPoints = "lr_key_points", lrPerStep = "lr_per_step"
        case memory, time
    }
}

extension RemovalPlan {
    /// The plan of `recipe` (resolved for the model: overrides applied) trained with `settings`
    /// on a model of `config` whose parameters take `parameterFloats` floats; `time` is added by
    /// `measured(_:)`.
    public init(recipe r: RemovalRecipe, settings s: TrainingSettings, layerNorms: FakeLayerNorms, config: GPT2Config,
                parameterFloats: Int, corpusTokens: Int) {
        let schedule = layerNorms.schedule, keep = layerNorms.keepLN
        (recipe, companionConfig, nLayers, keepLN) = (r.name.rawValue, r.companionConfig, config.nLayers, keep)
        (scheduleSteps, stepsRun, warmup) = (s.learningRate.totalSteps, s.steps, s.learningRate.warmupSteps)
        (lr, minLr, weightDecay, auxWeight) = (s.learningRate.peak, s.learningRate.floor, s.adamW.weightDecay, s.auxWeight)
        (momentum, momentumSequences) = (layerNorms.momentum, r.momentumSequences)
        sigmaUpdate = layerNorms.sigmaUpdate.rawValue
        momentumPerUpdate = layerNorms.sigmaUpdate == .step ? layerNorms.momentum
            : pow(layerNorms.momentum, Double(min(s.microBatch, s.sequencesPerStep)) / Double(max(layerNorms.momentumSequences, 1)))
        (maskEOTTargets, auxTargetSkipsBOSAndEOT) = (s.maskEOTTargets, s.auxTargetSkipsBOSAndEOT)
        (decayLNWeights, dropout) = (s.adamW.decayLayerNormWeights, s.dropout)
        (seqLen, sequencesPerStep, microBatch) = (s.seqLen, s.sequencesPerStep, s.microBatch)
        passesPerStep = (s.sequencesPerStep + s.microBatch - 1) / s.microBatch
        (tokensPerStep, tokensTotal, self.corpusTokens) = (s.tokensPerStep, s.tokensPerStep * s.steps, corpusTokens)
        removals = keep ? [] : schedule.events.map { Removal(step: $0.step, layerNorm: $0.path.name) }
        phases = keep ? [] : Self.phases(schedule)
        lrPerStep = (0..<s.steps).map { s.learningRate.rate(at: $0) }
        lrKeyPoints = Self.keyPoints(s, lnFinal: keep ? nil : schedule.lnFinalStep)
        memory = Self.memory(s, config: config, parameterFloats: parameterFloats)
    }

    static func phases(_ s: RemovalSchedule) -> [Phase] {
        let n = s.nLayers
        return [Phase(kind: "ln_2", first: s.ln2Start, gap: s.ln2Gap, last: s.ln2Start + s.ln2Gap * (n - 1)),
                Phase(kind: "ln_1 Q/K", first: s.ln1QKStart, gap: s.ln1QKGap, last: s.ln1QKStart + s.ln1QKGap * (n - 1)),
                Phase(kind: "ln_1 V", first: s.ln1VStart, gap: s.ln1VGap, last: s.ln1VStart + s.ln1VGap * (n - 1)),
                Phase(kind: "ln_f", first: s.lnFinalStep, gap: 0, last: s.lnFinalStep)]
    }

    /// Step 0, the end of the warm-up, ln_f's removal, the cosine's midpoint, the last step run
    /// and the schedule's end (where the rate reaches the floor), in step order; the names of
    /// points at one step joined.
    static func keyPoints(_ s: TrainingSettings, lnFinal: Int?) -> [Rate] {
        let lr = s.learningRate, horizon = lr.totalSteps
        var points: [(Int, String)] = [(0, "first step"), (lr.warmupSteps, "end of warm-up"),
                                       ((lr.warmupSteps + horizon) / 2, "cosine midpoint"), (s.steps - 1, "last step run"),
                                       (horizon, "schedule end, not run")]
        if let lnFinal { points.append((lnFinal, "ln_f removed")) }
        let byStep = Dictionary(grouping: points.filter { $0.0 <= horizon }, by: \.0)
        return byStep.keys.sorted().map { step in
            Rate(step: step, lr: lr.rate(at: step), what: byStep[step]!.map(\.1).joined(separator: ", "))
        }
    }

    static func memory(_ s: TrainingSettings, config: GPT2Config, parameterFloats: Int) -> Memory {
        let parameters = parameterFloats * MemoryLayout<Float>.stride
        let activations = ForwardPass.footprint(B: min(s.microBatch, s.sequencesPerStep), T: s.seqLen, config: config, backward: true,
                                                attentionDropout: s.dropout.attn > 0)
        let needed = 3 * parameters + activations
        let available = MemoryBudget.availableBytes
        return Memory(parameters: parameters, gradientsAndMoments: 3 * parameters, activations: activations,
                      total: parameters + needed, available: available, fits: available.map { needed <= $0 } ?? true)
    }

    /// This plan with the run's time estimated from one pass of `pass` seconds and one update of
    /// `update` seconds (`Trainer.timeOnePass`): passes per step × pass + update, × steps run.
    public func measured(pass: Double, update: Double) -> RemovalPlan {
        var p = self
        let step = Double(passesPerStep) * pass + update
        let basis = "an estimate from one forward and backward pass of \(min(microBatch, sequencesPerStep)) × \(seqLen) tokens "
            + "(after one untimed pass that allocates its buffers) and one AdamW update, each measured once on this machine"
        p.time = Time(basis: basis, passSeconds: pass, updateSeconds: update, stepSeconds: step, totalSeconds: step * Double(stepsRun))
        return p
    }
}
