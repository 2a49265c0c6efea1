import Foundation
import GPT2
import TensorCore

/// When σ's moving average takes a measurement (`remove-ln --sigma-update`).
public enum SigmaUpdate: String, Sendable, Codable, CaseIterable {
    /// After every micro-batch forward, as the companion code's `FakeLayerNorm` does on each call
    /// (the default): the momentum per update is `momentum^(sequences / momentumSequences)`.
    case microBatch = "micro-batch"
    /// Once per optimizer step, from the mean over the step's tokens, with `momentum` as it is
    /// (lnlens before issue 19; a checkpoint written then resumes so).
    case step
}

/// The state of the paper's LayerNorm removal: each LayerNorm's σ, an exponential moving average
/// of the per-token `sqrt(var + 1e-5)` of its input averaged over a forward's tokens, frozen once
/// the LayerNorm is fake; and which LayerNorms (or paths of `ln_1`) are fake. A fake LayerNorm is
/// FakeLN: `(x − mean x) / σ · w + b`. `ln_1` has one σ for its two paths, tracked while either
/// path is still real, as in the companion code where both paths share one module.
///
/// With `.microBatch` updates σ moves as the companion's (train.py at a15a638, run with
/// `EXP_RECOMPUTE_STD_ON_REAL=1`, without which its σ never leaves the start value): every call
/// of a `FakeLayerNorm` folds the call's mean σ in with `momentum` and, while that call is real,
/// copies the average into the σ it divides by. `ln_2` and `ln_f` are called once per forward;
/// `ln_1` three times (the Q/K path, the V path, and the V path again for `<|endoftext|>`
/// positions, whose "bos" σ buffer equals the average σ in every configuration the paper ran),
/// so its σ moves by `momentum³` per forward. The companion's EOT/BOS buffers therefore need no
/// state of their own: they always hold the same value as the average.
public struct FakeLayerNorms: Sendable, Equatable, Codable {
    /// The σ's epsilon: GPT-2's LayerNorm epsilon, as the companion code measures σ.
    public static let sigmaEps = Float(GPT2Config.defaultLayerNormEpsilon)
    /// `FakeLayerNorm` calls per forward on `ln_1`'s input in the companion code (Q/K, V, V at EOT).
    public static let ln1CallsPerForward = 3

    public var schedule: RemovalSchedule
    public var momentum: Double
    /// The sequences per forward that `momentum` is for (the companion's micro-batch; `.microBatch`).
    public var momentumSequences: Int
    public var sigmaUpdate: SigmaUpdate
    /// σ of `ln_1`, `ln_2` per block and of `ln_f`; nil until the first step measures it.
    public var ln1Sigma: [Double?]
    public var ln2Sigma: [Double?]
    public var lnFinalSigma: Double?
    /// `--keep-ln`: the same fine-tuning with nothing removed (the paper's vanilla control).
    public var keepLN: Bool

    public init(schedule: RemovalSchedule, momentum: Double = 0.9, keepLN: Bool = false, sigmaUpdate: SigmaUpdate = .microBatch,
                momentumSequences: Int = 32) {
        self.schedule = schedule
        self.momentum = momentum
        self.momentumSequences = momentumSequences
        self.sigmaUpdate = sigmaUpdate
        ln1Sigma = Array(repeating: nil, count: schedule.nLayers)
        ln2Sigma = Array(repeating: nil, count: schedule.nLayers)
        lnFinalSigma = nil
        self.keepLN = keepLN
    }

    enum CodingKeys: String, CodingKey {
        case schedule, momentum, momentumSequences, sigmaUpdate, ln1Sigma, ln2Sigma, lnFinalSigma, keepLN
    }

    /// A checkpoint written before `sigmaUpdate` existed updated σ once per step.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        schedule = try c.decode(RemovalSchedule.self, forKey: .schedule)
        momentum = try c.decode(Double.self, forKey: .momentum)
        momentumSequences = try c.decodeIfPresent(Int.self, forKey: .momentumSequences) ?? 1
        sigmaUpdate = try c.decodeIfPresent(SigmaUpdate.self, forKey: .sigmaUpdate) ?? .step
        ln1Sigma = try c.decode([Double?].self, forKey: .ln1Sigma)
        ln2Sigma = try c.decode([Double?].self, forKey: .ln2Sigma)
        lnFinalSigma = try c.decodeIfPresent(Double.self, forKey: .lnFinalSigma)
        keepLN = try c.decode(Bool.self, forKey: .keepLN)
    }

    func removed(_ path: RemovablePath, at step: Int) -> Bool { !keepLN && schedule.isRemoved(path, at: step) }

    /// The paths removed as step `step` begins.
    public func removals(at step: Int) -> [RemovablePath] {
        keepLN ? [] : schedule.events.filter { $0.step == step }.map(\.path)
    }

    /// How each LayerNorm divides during step `step`; `eps` is the real LayerNorms' epsilon.
    public func plan(at step: Int, eps: Float) -> LayerNormPlan {
        func scale(_ fake: Bool, _ sigma: Double?) -> LayerNormScale {
            fake ? .fixed(Float(sigma ?? 1)) : .standard(eps: eps)
        }
        let blocks = (0..<schedule.nLayers).map { b in
            LayerNormPlan.Block(ln1: scale(removed(.ln1QK(block: b), at: step), ln1Sigma[b]),
                                ln1V: scale(removed(.ln1V(block: b), at: step), ln1Sigma[b]),
                                ln2: scale(removed(.ln2(block: b), at: step), ln2Sigma[b]))
        }
        return LayerNormPlan(blocks: blocks, final: scale(removed(.lnFinal, at: step), lnFinalSigma), rawEps: Self.sigmaEps)
    }

    /// Whether a forward during step `step` divides by a σ that the step's σ updates still move:
    /// an `ln_1` with one path fake and the other real (its σ is tracked while either path is).
    public func planMovesWithinStep(at step: Int) -> Bool {
        !keepLN && (0..<schedule.nLayers).contains { removed(.ln1QK(block: $0), at: step) != removed(.ln1V(block: $0), at: step) }
    }

    /// Whether every LayerNorm is fake during step `step` (the model is LN-free).
    public func allRemoved(at step: Int) -> Bool {
        !keepLN && step >= schedule.lastStep
    }

    /// Folds one step's measured σ (the mean raw scale of each LayerNorm's input over the step's
    /// tokens) into the averages of the LayerNorms still real during `step`, with `momentum` as it
    /// is (`.step`). The first measurement starts an average.
    public mutating func update(measured: MeasuredSigmas, step: Int) {
        fold(measured, step: step, momentum: momentum, ln1Calls: 1)
    }

    /// Folds one micro-batch forward's measured σ (over its `sequences` sequences) into the
    /// averages of the LayerNorms still real during `step`, as the companion's calls do (`.microBatch`).
    public mutating func update(microBatch measured: MeasuredSigmas, sequences: Int, step: Int) {
        let m = pow(momentum, Double(sequences) / Double(max(momentumSequences, 1)))
        fold(measured, step: step, momentum: m, ln1Calls: Self.ln1CallsPerForward)
    }

    /// `calls` updates with momentum `m` and the same measurement: `m^calls · old + (1 − m^calls) · new`.
    mutating func fold(_ measured: MeasuredSigmas, step: Int, momentum m: Double, ln1Calls: Int) {
        func ema(_ old: Double?, _ new: Double, calls: Int = 1) -> Double {
            let k = pow(m, Double(calls))
            return old.map { k * $0 + (1 - k) * new } ?? new
        }
        for b in 0..<schedule.nLayers {
            if !(removed(.ln1QK(block: b), at: step) && removed(.ln1V(block: b), at: step)) {
                ln1Sigma[b] = ema(ln1Sigma[b], measured.ln1[b], calls: ln1Calls)
            }
            if !removed(.ln2(block: b), at: step) { ln2Sigma[b] = ema(ln2Sigma[b], measured.ln2[b]) }
        }
        if !removed(.lnFinal, at: step) { lnFinalSigma = ema(lnFinalSigma, measured.lnFinal) }
    }
}

/// The mean per-token σ `sqrt(var + 1e-5)` of each LayerNorm's input, accumulated over passes.
public struct MeasuredSigmas: Sendable, Equatable {
    public var ln1: [Double]
    public var ln2: [Double]
    public var lnFinal: Double
    var tokens: Int

    public init(nLayers: Int) {
        ln1 = Array(repeating: 0, count: nLayers)
        ln2 = Array(repeating: 0, count: nLayers)
        lnFinal = 0
        tokens = 0
    }

    /// Adds a retained pass's raw scales (sums; `mean()` divides).
    public mutating func add(_ pass: ForwardPass) {
        func sum(_ p: FloatPointer) -> Double { (0..<pass.N).reduce(0.0) { $0 + Double(p[$1]) } }
        for b in 0..<ln1.count {
            ln1[b] += sum(pass.blocks[b].ln1.rawScale)
            ln2[b] += sum(pass.blocks[b].ln2.rawScale)
        }
        lnFinal += sum(pass.lnF.rawScale)
        tokens += pass.N
    }

    /// Adds another accumulation's sums.
    public mutating func add(_ other: MeasuredSigmas) {
        for b in 0..<ln1.count {
            ln1[b] += other.ln1[b]
            ln2[b] += other.ln2[b]
        }
        lnFinal += other.lnFinal
        tokens += other.tokens
    }

    /// The means over every token added.
    public func mean() -> MeasuredSigmas {
        var m = self
        let n = Double(max(tokens, 1))
        m.ln1 = ln1.map { $0 / n }
        m.ln2 = ln2.map { $0 / n }
        m.lnFinal = lnFinal / n
        m.tokens = 1
        return m
    }
}

/// The auxiliary loss of the paper's fine-tuning: `weight · mean_t (σ_t − σ̄)²` over the tokens t of
/// a pass, σ_t = `sqrt(var + 1e-5)` of the input of `ln_f` (the final residual stream), σ̄ their
/// mean, held constant (detached) — with `inTarget`, the mean over the tokens it marks only (the
/// companion's `CustomTrainer` leaves position 0 and `<|endoftext|>` out of σ̄; none marked: σ̄ = 1,
/// its fallback). It pushes every position's residual norm towards the same value, so that one
/// frozen σ serves them all. Returns the loss and `d loss / d σ_t` scaled by `scale`.
public func uniformNormLoss(rawScale: ConstFloatPointer, count n: Int, weight: Double,
                            scale: Double = 1, inTarget: [Bool]? = nil) -> (loss: Double, gradient: [Float]) {
    guard n > 0 else { return (0, []) }
    var mean = 0.0, counted = 0
    for t in 0..<n where inTarget?[t] ?? true {
        mean += Double(rawScale[t])
        counted += 1
    }
    mean = counted == 0 ? 1 : mean / Double(counted)
    var loss = 0.0
    var grad = [Float](repeating: 0, count: n)
    for t in 0..<n {
        let d = Double(rawScale[t]) - mean
        loss += d * d
        grad[t] = Float(scale * weight * 2 * d / Double(n))
    }
    return (weight * loss / Double(n), grad)
}

extension FakeLayerNorms {
    /// The final weights in the released LN-free encoding (`remove_layernorm_by_scaling`): every
    /// LayerNorm weight multiplied by `1e6 / σ` and `layer_norm_epsilon = 1e12`, so that GPT-2's own
    /// LayerNorm `(x − mean)/sqrt(var + 1e12) · w'` divides by ≈ 1e6 and equals FakeLN. `parameters`
    /// must be the unprocessed checkpoint parameters; they are changed in place.
    public func encodeLNFree(_ parameters: ModelParameters, config: GPT2Config) -> GPT2Config {
        func scaleWeight(_ w: FloatPointer, _ sigma: Double?) {
            let k = Float(1e6 / (sigma ?? 1))
            for c in 0..<config.dModel { w[c] *= k }
        }
        for b in 0..<config.nLayers {
            scaleWeight(parameters.blocks[b].ln1W, ln1Sigma[b])
            scaleWeight(parameters.blocks[b].ln2W, ln2Sigma[b])
        }
        scaleWeight(parameters.lnFW, lnFinalSigma)
        var out = config
        out.layerNormEpsilon = 1e12
        return out
    }
}
