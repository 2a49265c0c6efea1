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

    /// One step with learning rate `lr` from gradients `grads` (same table).
    public func step(_ params: ModelParameters, grads: ModelParameters, lr: Double) {
        steps += 1
        let s = settings
        let b1 = Float(s.beta1), b2 = Float(s.beta2), eps = Float(s.eps)
        let bc1 = 1 - pow(s.beta1, Double(steps)), bc2 = 1 - pow(s.beta2, Double(steps))
        let stepSize = Float(lr / bc1), bc2Sqrt = Float(bc2.squareRoot())
        let oneMinusB1 = 1 - b1, oneMinusB2 = 1 - b2
        for e in params.table.checkpointEntries {
            let p = params.arena.base + e.offset, g = grads.arena.base + e.offset
            let mp = m.arena.base + e.offset, vp = v.arena.base + e.offset
            let decay = decays(e) ? Float(1 - lr * s.weightDecay) : 1
            parallelChunks(e.count, minimum: 1 << 16) { lo, hi in
                for i in lo..<hi {
                    let gi = g[i]
                    p[i] *= decay
                    mp[i] += (gi - mp[i]) * oneMinusB1
                    vp[i] = vp[i] * b2 + gi * gi * oneMinusB2
                    p[i] -= stepSize * mp[i] / (vp[i].squareRoot() / bc2Sqrt + eps)
                }
            }
        }
    }
}

/// Global gradient-norm clipping as `torch.nn.utils.clip_grad_norm_`: the L2 norm over every
/// checkpoint tensor's gradient; when above `maxNorm`, every gradient is scaled by
/// `maxNorm / (norm + 1e-6)`. Returns the norm before clipping.
@discardableResult
public func clipGradientNorm(_ grads: ModelParameters, maxNorm: Double) -> Double {
    var sum = 0.0
    for e in grads.table.checkpointEntries {
        let g = grads.arena.base + e.offset
        var s: Float = 0, c = 0.0
        for i in 0..<e.count {
            s += g[i] * g[i]
            if i & 1023 == 1023 { c += Double(s); s = 0 }
        }
        sum += c + Double(s)
    }
    let norm = sum.squareRoot()
    let coefficient = maxNorm / (norm + 1e-6)
    if coefficient < 1 {
        let k = Float(coefficient)
        for e in grads.table.checkpointEntries {
            let g = grads.arena.base + e.offset
            for i in 0..<e.count { g[i] *= k }
        }
    }
    return norm
}
