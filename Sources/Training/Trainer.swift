import Distributed
import Foundation
import GPT2
import Support
import TensorCore

/// Everything that determines a training run's arithmetic (what a resume must match).
public struct TrainingSettings: Sendable, Equatable, Codable {
    /// Tokens per sequence (block).
    public var seqLen: Int
    /// Sequences per optimizer step (`--batch-tokens / --seq-len`).
    public var sequencesPerStep: Int
    /// Sequences per forward/backward pass; a step accumulates the gradients of its micro-batches.
    public var microBatch: Int
    public var steps: Int
    public var seed: UInt64
    public var learningRate: LearningRateSchedule
    public var adamW: AdamWSettings
    public var maxGradNorm: Double
    /// Weight of the auxiliary loss on the spread of σ at `ln_f`'s input (0: none).
    public var auxWeight: Double
    /// Predictions of `<|endoftext|>` leave the loss (the companion's collator pads with EOS and
    /// so masks every EOT target; `remove-ln --mask-eot-targets`, its default).
    public var maskEOTTargets = false
    /// The auxiliary loss's target σ̄ leaves out position 0 and `<|endoftext|>` inputs (the
    /// companion's `CustomTrainer`; `remove-ln --aux-target content`, its default).
    public var auxTargetSkipsBOSAndEOT = false
    /// Dropout in the training forward and backward (`--dropout`, `--embd-pdrop`, `--attn-pdrop`,
    /// `--resid-pdrop`; remove-ln's default the source's config.json, as the companion fine-tunes in
    /// train mode); never in evaluation. Stored only when not all 0, so settings stored before it
    /// was an option read as none.
    public var dropout: DropoutRates {
        get { dropoutRates ?? .none }
        set { dropoutRates = newValue.isZero ? nil : newValue }
    }
    var dropoutRates: DropoutRates?

    /// GPT-2's `<|endoftext|>`, which the companion code hard-codes.
    public static let endOfText = 50256

    public init(seqLen: Int, sequencesPerStep: Int, microBatch: Int, steps: Int, seed: UInt64,
                learningRate: LearningRateSchedule, adamW: AdamWSettings = AdamWSettings(), maxGradNorm: Double = 1,
                auxWeight: Double = 0) {
        self.seqLen = seqLen
        self.sequencesPerStep = sequencesPerStep
        self.microBatch = microBatch
        self.steps = steps
        self.seed = seed
        self.learningRate = learningRate
        self.adamW = adamW
        self.maxGradNorm = maxGradNorm
        self.auxWeight = auxWeight
    }

    public var tokensPerStep: Int { seqLen * sequencesPerStep }

    enum CodingKeys: String, CodingKey {
        case seqLen, sequencesPerStep, microBatch, steps, seed, learningRate, adamW, maxGradNorm, auxWeight
        case maskEOTTargets, auxTargetSkipsBOSAndEOT
        case dropoutRates = "dropout"
    }

    /// Settings stored before the companion's numerics were options had none of them.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(seqLen: try c.decode(Int.self, forKey: .seqLen), sequencesPerStep: try c.decode(Int.self, forKey: .sequencesPerStep),
                  microBatch: try c.decode(Int.self, forKey: .microBatch), steps: try c.decode(Int.self, forKey: .steps),
                  seed: try c.decode(UInt64.self, forKey: .seed), learningRate: try c.decode(LearningRateSchedule.self, forKey: .learningRate),
                  adamW: try c.decode(AdamWSettings.self, forKey: .adamW), maxGradNorm: try c.decode(Double.self, forKey: .maxGradNorm),
                  auxWeight: try c.decode(Double.self, forKey: .auxWeight))
        maskEOTTargets = try c.decodeIfPresent(Bool.self, forKey: .maskEOTTargets) ?? false
        auxTargetSkipsBOSAndEOT = try c.decodeIfPresent(Bool.self, forKey: .auxTargetSkipsBOSAndEOT) ?? false
        dropout = try c.decodeIfPresent(DropoutRates.self, forKey: .dropoutRates) ?? .none
    }
}

/// What one optimizer step did.
public struct StepReport: Sendable, Equatable {
    public var step: Int
    /// Mean next-token cross-entropy over the step's sequences.
    public var loss: Double
    /// The auxiliary loss (already weighted), nil when its weight is 0.
    public var auxLoss: Double?
    public var learningRate: Double
    /// Global gradient norm before clipping.
    public var gradNorm: Double
    /// Tokens trained on since step 0, this step included.
    public var tokens: Int
    public var seconds: Double
    /// LayerNorms removed as the step began.
    public var removals: [RemovablePath]
}

/// Trains a GPT-2 in place: AdamW on the cross-entropy of the corpus's blocks (and, when removing
/// LayerNorm, the auxiliary loss), each step a fixed set of blocks given by the seed, gradients
/// accumulated over micro-batches, clipped, then one AdamW step. Removing LayerNorm, each step
/// runs with the LayerNorm plan of `layerNorms` and then folds the measured σ into it.
///
///     let trainer = try Trainer(model: model, corpus: corpus, settings: settings, layerNorms: nil)
///     while trainer.step < settings.steps { let r = try trainer.runStep() }
public final class Trainer {
    public let model: GPT2Model
    public let corpus: TokenCorpus
    public let settings: TrainingSettings
    public let optimizer: AdamW
    public let gradients: ModelParameters
    /// The LayerNorm removal's state (nil: ordinary training).
    public internal(set) var layerNorms: FakeLayerNorms?
    /// The next step to run (steps done so far).
    public internal(set) var step = 0
    var order: BlockOrder
    /// Buffers reused from pass to pass (every step has the same shapes).
    let arenas = ArenaPool()
    /// The ranks training together (`single`: this process alone); each runs its share of every
    /// step's micro-batches (`DataParallel.swift`).
    public let communicator: Communicator
    /// How the ranks sum their gradients (`--allreduce`): one reduction after the step's passes,
    /// or block by block during the backward of each rank's last micro-batch.
    public var allreduce = AllreduceMode.whole

    public init(model: GPT2Model, corpus: TokenCorpus, settings s: TrainingSettings, layerNorms: FakeLayerNorms?,
                communicator: Communicator = .single) throws {
        try Self.check(model: model, corpus: corpus, settings: s, layerNorms: layerNorms)
        try Self.check(settings: s, ranks: communicator.size)
        self.model = model
        self.communicator = communicator
        self.corpus = corpus
        self.settings = s
        self.layerNorms = layerNorms
        optimizer = try AdamW(table: model.parameters.table, settings: s.adamW)
        gradients = try ModelParameters(table: model.parameters.table)
        order = BlockOrder(blocks: corpus.blockCount(seqLen: s.seqLen), seed: s.seed)
    }

    /// Refuses a training that cannot run as set (`TrainingError` naming the option): before
    /// anything is allocated, and for `remove-ln --plan`, which trains nothing.
    public static func check(model: GPT2Model, corpus: TokenCorpus, settings s: TrainingSettings, layerNorms: FakeLayerNorms?) throws {
        guard model.processing.isNone else {
            throw TrainingError.badOption(option: "model", reason: "training needs the checkpoint's own parameters (no weight processing)")
        }
        guard s.seqLen >= 2 else { throw TrainingError.badOption(option: "--seq-len", reason: "must be at least 2 (a sequence predicts its next tokens)") }
        guard s.seqLen <= model.config.nCtx else { throw TrainingError.seqLenTooLong(seqLen: s.seqLen, nCtx: model.config.nCtx) }
        guard s.sequencesPerStep >= 1 else {
            throw TrainingError.badOption(option: "--batch-tokens", reason: "must be at least --seq-len (\(s.seqLen))")
        }
        guard s.microBatch >= 1 else { throw TrainingError.badOption(option: "--micro-batch", reason: "must be at least 1") }
        let horizon = s.learningRate.totalSteps
        guard horizon >= 1 else { throw TrainingError.badOption(option: "--schedule-steps", reason: "must be at least 1") }
        guard (1...horizon).contains(s.steps) else {
            throw TrainingError.badOption(option: "--stop-at", reason: "\(s.steps) is not within the schedule's 1…\(horizon) steps")
        }
        try corpus.checkWindow(s.seqLen, option: "--seq-len")
        guard corpus.blockCount(seqLen: s.seqLen) >= s.sequencesPerStep else {
            throw TrainingError.corpusTooSmall(file: corpus.path, tokens: corpus.tokenCount, needed: s.tokensPerStep,
                                               sequences: s.sequencesPerStep, seqLen: s.seqLen)
        }
        if let ln = layerNorms, !ln.keepLN, let last = ln.schedule.events.last, last.step >= s.steps {
            let (option, steps) = last.step >= horizon ? ("--schedule-steps", horizon) : ("--stop-at", s.steps)
            throw TrainingError.scheduleTooLong(lastEvent: last.step, what: last.path.event, option: option, steps: steps)
        }
    }

    /// Sequences to train on instead of the corpus's (tests that replay a reference's batches).
    var batchOverride: ((Int) -> [[Int]])?

    /// The sequences of step `step`, in order.
    public func batch(at step: Int) -> [[Int]] {
        if let batchOverride { return batchOverride(step) }
        var o = order
        let n = settings.sequencesPerStep
        return (0..<n).map { corpus.block(o.block(at: step * n + $0), seqLen: settings.seqLen) }
    }

    /// The LayerNorm plan of step `step` (the model's own LayerNorms when not removing any).
    public func plan(at step: Int) -> LayerNormPlan {
        let eps = Float(model.config.layerNormEpsilon)
        if let layerNorms { return layerNorms.plan(at: step, eps: eps) }
        var plan = model.layerNormPlan
        plan.rawEps = FakeLayerNorms.sigmaEps
        return plan
    }

    /// Forward and backward over the step's micro-batches, the gradients accumulated in
    /// `gradients` (zeroed first); returns the step's loss and auxiliary loss and the σ measured.
    /// Each micro-batch runs with the LayerNorm plan of the moment: with `.microBatch` σ updates,
    /// σ is folded in after each one (a fake `ln_1` Q/K path divides by a σ its real V path still moves).
    /// With several ranks each runs its share and the sums are reduced (`reduceStep`).
    public func accumulateGradients(step: Int) throws -> (loss: Double, aux: Double, sigmas: MeasuredSigmas) {
        zeroFloats(gradients.arena.base, count: gradients.table.count)
        let sequences = batch(at: step)
        let total = sequences.count
        let parts = microBatches(sequences: total)
        let mine = share(of: parts.count)
        let before = layerNorms
        try replayEarlierMicroBatches(sequences, parts: parts[..<mine.lowerBound], step: step)
        var stats = StepStatistics(microBatches: parts.count, nLayers: model.config.nLayers)
        for j in mine {
            let part = Array(sequences[parts[j]])
            let share = Double(part.count) / Double(total)
            var one = MeasuredSigmas(nLayers: model.config.nLayers)
            let pass = try forwardBackward(part, share: share, plan: plan(at: step), measured: &one,
                                           dropout: dropout(step: step, microBatch: j), reducing: j == mine.upperBound - 1)
            if layerNorms?.sigmaUpdate == .microBatch {
                layerNorms?.update(microBatch: one.mean(), sequences: part.count, step: step)
            }
            stats.record(j, sigmas: one, loss: pass.loss * share, aux: pass.aux * share)
        }
        if communicator.size > 1 { try reduceStep(&stats, parts: parts, before: before, step: step) }
        return stats.total()
    }

    /// One micro-batch's forward and backward, its gradients (scaled by `share`, its part of the
    /// step) added to `gradients` and its σ to `measured`; returns its loss and auxiliary loss.
    /// The loss is the micro-batch's mean over its targets (without `<|endoftext|>` ones when
    /// masked), weighted by `share`, as the companion's Trainer divides each micro-batch's by the
    /// accumulation steps.
    /// `reducing`: the rank's last micro-batch of the step, whose backward starts the blocks'
    /// reductions with `--allreduce buckets`.
    func forwardBackward(_ part: [[Int]], share: Double, plan: LayerNormPlan, measured: inout MeasuredSigmas,
                         dropout: Dropout? = nil, reducing: Bool = false) throws -> (loss: Double, aux: Double) {
        var forward = ForwardOptions(logits: .all, retainForBackward: true, layerNorms: plan)
        (forward.arenas, forward.dropout) = (arenas, dropout)
        let pass = try model.run(part, forward)
        var options = BackwardOptions(parameterGradients: gradients)
        options.metricScale = Float(share)
        if settings.maskEOTTargets { options.lossIgnoredTarget = TrainingSettings.endOfText }
        var aux = 0.0
        if settings.auxWeight > 0 {
            let eot = TrainingSettings.endOfText
            let inTarget = settings.auxTargetSkipsBOSAndEOT ? part.flatMap { s in s.indices.map { $0 != 0 && s[$0] != eot } } : nil
            let (value, grad) = uniformNormLoss(rawScale: pass.lnF.rawScale, count: pass.N, weight: settings.auxWeight, scale: share,
                                                inTarget: inTarget)
            aux = value
            options.finalRawScaleGradient = grad
        }
        var failure: (any Error)?
        if reducing, let buckets = gradientBuckets() {
            options.blockDone = { [communicator, gradients] l in
                do {
                    try communicator.startAllreduceSum(gradients.arena.base + buckets.blocks[l].lowerBound, count: buckets.blocks[l].count)
                    try communicator.progressAllreduces()
                } catch { failure = failure ?? error }
            }
        }
        let result = try model.backward(pass, metric: .loss, options: options)
        if let failure { throw failure }
        measured.add(pass)
        return (result.total, aux)
    }

    /// The dropout masks of micro-batch `microBatch` (0-based within the step) of step `step`; nil
    /// when the settings apply none (a pass then runs exactly as without dropout).
    public func dropout(step: Int, microBatch: Int) -> Dropout? {
        settings.dropout.isZero ? nil : Dropout(rates: settings.dropout, seed: settings.seed, step: step, microBatch: microBatch)
    }

    /// Seconds of one forward and backward pass over the first micro-batch of step 0 (LayerNorms
    /// as at step 0) and of one clipping and AdamW update: what `remove-ln --plan` extrapolates a
    /// run's time from. The timed pass follows one untimed pass, which allocates the buffers that
    /// every pass of a training after its first reuses (the first touch of fresh memory costs up
    /// to a third more). Changes the parameters and moments (a plan's trainer is thrown away).
    public func timeOnePass() throws -> (pass: Double, update: Double) {
        func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }
        let part = Array(batch(at: 0).prefix(settings.microBatch)), plan = plan(at: 0)
        var measured = MeasuredSigmas(nLayers: model.config.nLayers)
        _ = try forwardBackward(part, share: 1, plan: plan, measured: &measured, dropout: dropout(step: 0, microBatch: 0))
        zeroFloats(gradients.arena.base, count: gradients.table.count)
        let t0 = now()
        _ = try forwardBackward(part, share: 1, plan: plan, measured: &measured, dropout: dropout(step: 0, microBatch: 0))
        let t1 = now()
        let k = gradientClipScale(norm: gradientNorm(gradients), maxNorm: settings.maxGradNorm)
        optimizer.step(model.parameters, grads: gradients, lr: settings.learningRate.rate(at: 0), gradScale: k)
        return (t1 - t0, now() - t1)
    }

    /// Starts the σ averages from the LayerNorms' inputs on step `step`'s sequences, with every
    /// LayerNorm real (the companion code starts them from σ measured on the training data).
    func startSigmas(step: Int) throws {
        let real = LayerNormPlan(uniform: .standard(eps: Float(model.config.layerNormEpsilon)), nLayers: model.config.nLayers,
                             rawEps: FakeLayerNorms.sigmaEps)
        var measured = MeasuredSigmas(nLayers: model.config.nLayers)
        let sequences = batch(at: step)
        var start = 0
        while start < sequences.count {
            let part = Array(sequences[start ..< min(sequences.count, start + settings.microBatch)])
            start += part.count
            measured.add(try model.run(part, ForwardOptions(logits: .none, retainForBackward: true, layerNorms: real)))
        }
        let m = measured.mean()
        layerNorms?.ln1Sigma = m.ln1
        layerNorms?.ln2Sigma = m.ln2
        layerNorms?.lnFinalSigma = m.lnFinal
    }

    /// Runs step `step`: removals due, gradients, clipping, AdamW, the σ averages.
    @discardableResult
    public func runStep() throws -> StepReport {
        let started = DispatchTime.now().uptimeNanoseconds
        let s = step
        let removals = layerNorms?.removals(at: s) ?? []
        let lr = settings.learningRate.rate(at: s)
        if let ln = layerNorms, ln.lnFinalSigma == nil { try startSigmas(step: s) }
        let (loss, aux, sigmas) = try accumulateGradients(step: s)
        guard loss.isFinite, aux.isFinite else { throw TrainingError.nonFiniteLoss(step: s) }
        // Clipping's coefficient is applied inside AdamW's pass over the gradients (`gradients`
        // keep the unclipped sums).
        let norm = gradientNorm(gradients)
        guard norm.isFinite else { throw TrainingError.nonFiniteLoss(step: s) }
        optimizer.step(model.parameters, grads: gradients, lr: lr, gradScale: gradientClipScale(norm: norm, maxNorm: settings.maxGradNorm))
        if layerNorms?.sigmaUpdate == .step { layerNorms?.update(measured: sigmas, step: s) }
        step += 1
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) * 1e-9
        return StepReport(step: s, loss: loss, auxLoss: settings.auxWeight > 0 ? aux : nil, learningRate: lr, gradNorm: norm,
                          tokens: step * settings.tokensPerStep, seconds: seconds, removals: removals)
    }
}
