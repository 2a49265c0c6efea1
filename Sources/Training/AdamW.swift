import Foundation
import GPT2
import TensorCore

/// AdamW's settings, `torch.optim.AdamW`'s defaults except the weight decay (Hugging Face
/// Trainer's and the paper's 0.01).
public struct AdamWSettings: Sendable, Equatable, Codable {
    public var beta1: Double = 0.9
    public var beta2: Double = 0.999
    public var eps: Double = 1e-8
    public var weightDecay: Double = 0.01
    /// Decay the LayerNorm weights too (not their biases): what Hugging Face Trainer does when the
    /// LayerNorms are the companion's `FakeLayerNorm` modules, which its decay groups do not
    /// recognise as LayerNorms (`remove-ln --decay-ln-weights`, on unless `--keep-ln`).
    public var decayLayerNormWeights = false
    public init() {}

    enum CodingKeys: String, CodingKey { case beta1, beta2, eps, weightDecay, decayLayerNormWeights }

    /// Settings stored before `decayLayerNormWeights` existed did not decay them.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        beta1 = try c.decode(Double.self, forKey: .beta1)
        beta2 = try c.decode(Double.self, forKey: .beta2)
        eps = try c.decode(Double.self, forKey: .eps)
        weightDecay = try c.decode(Double.self, forKey: .weightDecay)
        decayLayerNormWeights = try c.decodeIfPresent(Bool.self, forKey: .decayLayerNormWeights) ?? false
    }
}

/// AdamW over a model's parameter table, as `torch.optim.AdamW` computes it (decoupled decay
/// `p ← p·(1 − lr·wd)`, then `m ← m + (1 − β1)(g − m)`, `v ← β2·v + (1 − β2)·g²`,
/// `p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)`), over the checkpoint's tensors only.
/// Decay applies to the rank-2 tensors (embeddings and matrices): what Hugging Face Trainer
/// decays, since it exempts biases and LayerNorm parameters, which are the rank-1 ones.
public final class AdamW {
    public let settings: AdamWSettings
    /// First and second moments, laid out like the parameters.
    public let m: ModelParameters
    public let v: ModelParameters
    /// Steps taken (t of the bias corrections).
    public internal(set) var steps: Int = 0

    public init(table: ParameterTable, settings: AdamWSettings) throws {
        self.settings = settings
        m = try ModelParameters(table: table)
        v = try ModelParameters(table: table)
    }

    /// Whether `entry` is decayed by default (the rank-2 tensors).
    public static func decays(_ entry: ParameterEntry) -> Bool { entry.shape.count == 2 }

    /// Whether `entry` is a LayerNorm weight (`h.i.ln_1.weight`, `h.i.ln_2.weight`, `ln_f.weight`).
    public static func isLayerNormWeight(_ entry: ParameterEntry) -> Bool {
        ["ln_1.weight", "ln_2.weight", "ln_f.weight"].contains { entry.name == $0 || entry.name.hasSuffix("." + $0) }
    }

    /// Whether this optimizer decays `entry`.
    public func decays(_ entry: ParameterEntry) -> Bool {
        Self.decays(entry) || (settings.decayLayerNormWeights && Self.isLayerNormWeight(entry))
    }

    /// One step with learning rate `lr` from gradients `grads` (same table), each gradient
    /// multiplied by `gradScale` first (the clipping coefficient, `gradientClipScale`: the same
    /// product `clipGradientNorm` would store, without a pass of its own over the gradients).
    public func step(_ params: ModelParameters, grads: ModelParameters, lr: Double, gradScale: Float = 1) {
        steps += 1
        let s = settings
        let bc1 = 1 - pow(s.beta1, Double(steps)), bc2 = 1 - pow(s.beta2, Double(steps))
        let constants = AdamWConstants(beta1: s.beta1, beta2: s.beta2, eps: Float(s.eps),
                                       stepSize: Float(lr / bc1), bc2Sqrt: Float(bc2.squareRoot()), gradScale: gradScale)
        for e in params.table.checkpointEntries {
            let p = params.arena.base + e.offset, g = grads.arena.base + e.offset
            let mp = m.arena.base + e.offset, vp = v.arena.base + e.offset
            let decay = decays(e) ? Float(1 - lr * s.weightDecay) : 1
            parallelChunks(e.count, minimum: 1 << 16) { lo, hi in
                adamWUpdate(p: p + lo, g: g + lo, m: mp + lo, v: vp + lo, count: hi - lo, decay: decay, constants)
            }
        }
    }
}

/// The per-step scalars of AdamW's update, in Float as the update computes.
struct AdamWConstants {
    let beta2: Float, eps: Float
    /// 1 − β1 and 1 − β2, each computed in Double then rounded, as torch passes them to its kernels:
    /// `1 − Float(0.999)` would be 9.99987e-4, which makes every update 6.4e-6 too large.
    let oneMinusBeta1: Float, oneMinusBeta2: Float
    /// lr / (1 − β1ᵗ) and √(1 − β2ᵗ).
    let stepSize: Float, bc2Sqrt: Float
    /// Multiplies each gradient before use (1: none).
    let gradScale: Float

    init(beta1: Double, beta2: Double, eps: Float, stepSize: Float, bc2Sqrt: Float, gradScale: Float) {
        (self.beta2, self.eps, self.stepSize, self.bc2Sqrt, self.gradScale) = (Float(beta2), eps, stepSize, bc2Sqrt, gradScale)
        (oneMinusBeta1, oneMinusBeta2) = (Float(1 - beta1), Float(1 - beta2))
    }
}

/// AdamW's update of `count` parameters in place (`p`, `m`, `v`; gradients `g`), eight lanes at
/// a time then one by one: the same Float operations in the same order for every element as the
/// scalar form (`g·k`, `p·decay`, `m + (g − m)(1 − β1)`, `v·β2 + g²(1 − β2)`,
/// `p − stepSize·m / (√v / bc2Sqrt + ε)`), so results do not depend on the split.
@inline(__always)
func adamWUpdate(p: UnsafeMutablePointer<Float>, g: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>,
                 v: UnsafeMutablePointer<Float>, count: Int, decay: Float, _ c: AdamWConstants) {
    let oneMinusB1 = c.oneMinusBeta1, oneMinusB2 = c.oneMinusBeta2
    typealias F8 = SIMD8<Float>
    var i = 0
    while i + 8 <= count {
        let gi = UnsafeRawPointer(g + i).loadUnaligned(as: F8.self) * c.gradScale
        var pi = UnsafeRawPointer(p + i).loadUnaligned(as: F8.self) * decay
        var mi = UnsafeRawPointer(m + i).loadUnaligned(as: F8.self)
        var vi = UnsafeRawPointer(v + i).loadUnaligned(as: F8.self)
        mi += (gi - mi) * oneMinusB1
        vi = vi * c.beta2 + gi * gi * oneMinusB2
        pi -= c.stepSize * mi / (vi.squareRoot() / c.bc2Sqrt + c.eps)
        UnsafeMutableRawPointer(p + i).storeBytes(of: pi, as: F8.self)
        UnsafeMutableRawPointer(m + i).storeBytes(of: mi, as: F8.self)
        UnsafeMutableRawPointer(v + i).storeBytes(of: vi, as: F8.self)
        i += 8
    }
    while i < count {
        let gi = g[i] * c.gradScale
        p[i] *= decay
        m[i] += (gi - m[i]) * oneMinusB1
        v[i] = v[i] * c.beta2 + gi * gi * oneMinusB2
        p[i] -= c.stepSize * m[i] / (v[i].squareRoot() / c.bc2Sqrt + c.eps)
        i += 1
    }
}

/// Global gradient-norm clipping as `torch.nn.utils.clip_grad_norm_`: the L2 norm over every
/// checkpoint tensor's gradient; when above `maxNorm`, every gradient is scaled by
/// `maxNorm / (norm + 1e-6)`. Returns the norm before clipping. (A training step passes the
/// coefficient to `AdamW.step` instead: `gradientNorm` and `gradientClipScale`.)
@discardableResult
public func clipGradientNorm(_ grads: ModelParameters, maxNorm: Double) -> Double {
    let norm = gradientNorm(grads)
    let k = gradientClipScale(norm: norm, maxNorm: maxNorm)
    if k < 1 {
        for e in grads.table.checkpointEntries {
            let g = grads.arena.base + e.offset
            parallelChunks(e.count, minimum: 1 << 16) { lo, hi in for i in lo..<hi { g[i] *= k } }
        }
    }
    return norm
}

/// The L2 norm over every checkpoint tensor's gradient: squares summed in Float over blocks of
/// 1,024 (eight lanes), the blocks' sums in Double, a tensor's blocks split over the cores.
public func gradientNorm(_ grads: ModelParameters) -> Double {
    var sum = 0.0
    for e in grads.table.checkpointEntries { sum += sumOfSquares(grads.arena.base + e.offset, count: e.count) }
    return sum.squareRoot()
}

/// What clipping multiplies every gradient by: `maxNorm / (norm + 1e-6)` when that is below 1, else 1.
public func gradientClipScale(norm: Double, maxNorm: Double) -> Float {
    let coefficient = maxNorm / (norm + 1e-6)
    return coefficient < 1 ? Float(coefficient) : 1
}

/// Σ x² over `count` floats (see `gradientNorm`).
func sumOfSquares(_ x: UnsafeMutablePointer<Float>, count: Int) -> Double {
    let block = 1024, blocks = (count + block - 1) / block
    var partial = [Double](repeating: 0, count: blocks)
    partial.withUnsafeMutableBufferPointer { out in
        let o = out.baseAddress!
        parallelChunks(blocks, minimum: 64) { lo, hi in
            for b in lo..<hi {
                let start = b * block, end = min(count, start + block)
                var lanes = SIMD8<Float>()
                var i = start
                while i + 8 <= end {
                    let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
                    lanes += v * v
                    i += 8
                }
                var s = lanes.sum()
                while i < end { s += x[i] * x[i]; i += 1 }
                o[b] = Double(s)
            }
        }
    }
    return partial.reduce(0, +)
}
