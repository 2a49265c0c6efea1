import Foundation
import GPT2
import TensorCore

/// The state of the paper's LayerNorm removal: each LayerNorm's σ, an exponential moving average
/// (`momentum`, applied once per optimizer step; the companion code applies its recipe's value on
/// every micro-batch forward, `RemovalRecipe.momentumSequences`) of the per-token
/// `sqrt(var + 1e-5)` of its input averaged over the step's tokens, frozen once the LayerNorm is fake; and which LayerNorms (or paths of `ln_1`) are fake. A fake
/// LayerNorm is FakeLN: `(x − mean x) / σ · w + b`. `ln_1` has one σ for its two paths, tracked
/// while either path is still real, as in the companion code where both paths share one module.
public struct FakeLayerNorms: Sendable, Equatable, Codable {
    /// The σ's epsilon: GPT-2's LayerNorm epsilon, as the companion code measures σ.
    public static let sigmaEps = Float(GPT2Config.defaultLayerNormEpsilon)

    public var schedule: RemovalSchedule
    public var momentum: Double
    /// σ of `ln_1`, `ln_2` per block and of `ln_f`; nil until the first step measures it.
    public var ln1Sigma: [Double?]
    public var ln2Sigma: [Double?]
    public var lnFinalSigma: Double?
    /// `--keep-ln`: the same fine-tuning with nothing removed (the paper's vanilla control).
    public var keepLN: Bool

    public init(schedule: RemovalSchedule, momentum: Double = 0.9, keepLN: Bool = false) {
        self.schedule = schedule
        self.momentum = momentum
        ln1Sigma = Array(repeating: nil, count: schedule.nLayers)
        ln2Sigma = Array(repeating: nil, count: schedule.nLayers)
        lnFinalSigma = nil
        self.keepLN = keepLN
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

    /// Whether every LayerNorm is fake during step `step` (the model is LN-free).
    public func allRemoved(at step: Int) -> Bool {
        !keepLN && step >= schedule.lastStep
    }

    /// Folds one step's measured σ (the mean raw scale of each LayerNorm's input over the step's
    /// tokens) into the averages of the LayerNorms still real during `step`. The first
    /// measurement starts an average.
    public mutating func update(measured: MeasuredSigmas, step: Int) {
        func ema(_ old: Double?, _ new: Double) -> Double { old.map { momentum * $0 + (1 - momentum) * new } ?? new }
        for b in 0..<schedule.nLayers {
            if !(removed(.ln1QK(block: b), at: step) && removed(.ln1V(block: b), at: step)) {
                ln1Sigma[b] = ema(ln1Sigma[b], measured.ln1[b])
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
/// mean, held constant (detached). It pushes every position's residual norm towards the same value,
/// so that one frozen σ serves them all. Returns the loss and `d loss / d σ_t` scaled by `scale`.
public func uniformNormLoss(rawScale: ConstFloatPointer, count n: Int, weight: Double,
                            scale: Double = 1) -> (loss: Double, gradient: [Float]) {
    guard n > 0 else { return (0, []) }
    var mean = 0.0
    for t in 0..<n { mean += Double(rawScale[t]) }
    mean /= Double(n)
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
