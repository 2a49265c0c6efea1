import Foundation
import GPT2
import TensorCore

/// The logits of a pass whose last-layer MLP neurons are mean-ablated, from the logits as they
/// were and without a new unembedding. Setting neuron j's `hook_post` to its mean adds
/// `c · w_out[j]` (c = mean − act, per row) to the final residual x, and the final LayerNorm
/// (x centred, divided by one σ per row, then γ and b) and the unembedding turn that into
///
///     z' = (σ/σ') · (z − k) + Σ_j (c_j/σ') · u_j + k,   σ' = sqrt(mean((xc + Σ_j c_j·wc_j)²) + eps)
///
/// with xc the centred x, wc_j the centred w_out[j], u_j = (wc_j ⊙ γ) · W_U and k = b · W_U + b_U
/// (the logits of a row whose normalised residual is zero). An LN-free model divides by its
/// constant instead of σ and σ': z' = z + Σ_j (c_j/σ) · u_j. Exact for several neurons at once (the
/// centring is linear, σ' is taken of their sum); per row it costs O(d_model · K + vocab · K)
/// instead of the unembedding's O(d_model · vocab).
public struct RankOneLogits: @unchecked Sendable {
    // @unchecked: the pointers are the model's weights, read only.
    /// The neurons whose directions are precomputed, in the order `deltas` index them.
    public let neurons: [Int]
    let C: Int, V: Int
    let mode: LayerNormScale
    let rawEps: Float
    let lnF: LayerNormWeights?
    let wU: ConstFloatPointer, bU: ConstFloatPointer
    /// The centred w_out of each neuron, `K × C`.
    let centred: [Double]
    /// u_j of each neuron, `K × V`.
    let directions: [Float]
    /// k = b · W_U + b_U, `V`.
    let offset: [Float]

    public init(model: GPT2Model, neurons: [Int]) {
        let cfg = model.config, C = cfg.dModel, V = cfg.dVocab, p = model.parameters
        let w = p.blocks[cfg.nLayers - 1].wOut
        (self.neurons, self.C, self.V, mode, rawEps) = (neurons, C, V, model.layerNormPlan.final, model.layerNormPlan.rawEps)
        (lnF, wU, bU) = (p.lnF, ConstFloatPointer(p.wU), ConstFloatPointer(p.bU))
        var centred = [Double](repeating: 0, count: neurons.count * C), scaled = [Float](repeating: 0, count: neurons.count * C)
        for (i, n) in neurons.enumerated() {
            let row = w + n * C
            let mean = (0..<C).reduce(0.0) { $0 + Double(row[$1]) } / Double(C)
            for c in 0..<C {
                centred[i * C + c] = Double(row[c]) - mean
                scaled[i * C + c] = Float(centred[i * C + c]) * (p.lnF.map { $0.w[c] } ?? 1)
            }
        }
        var directions = [Float](repeating: 0, count: neurons.count * V), offset = [Float](repeating: 0, count: V)
        let zero = [Float](repeating: 0, count: V), bias = (0..<C).map { c in p.lnF.map { $0.b[c] } ?? 0 }
        if !neurons.isEmpty { unembedForward(logits: &directions, x: scaled, wU: p.wU, bU: zero, R: neurons.count, C: C, V: V) }
        unembedForward(logits: &offset, x: bias, wU: p.wU, bU: p.bU, R: 1, C: C, V: V)
        (self.centred, self.directions, self.offset) = (centred, directions, offset)
    }

    /// The logits of the `N` rows of the final residual `x (N, C)` as the pass's end makes them
    /// (final LayerNorm, unembedding) into `logits (N, V)`, and each row's σ into `sigma (N)`.
    public func logits(x: ConstFloatPointer, N: Int, into logits: FloatPointer, sigma: FloatPointer) {
        let mean = FloatPointer.allocate(capacity: N), out = FloatPointer.allocate(capacity: N * C)
        defer { mean.deallocate(); out.deallocate() }
        layerNormStats(mean: mean, scale: sigma, rawScale: nil, x: x, N: N, C: C, mode: mode, rawEps: rawEps)
        layerNormApply(out: out, x: x, mean: mean, scale: sigma, w: lnF?.w, b: lnF?.b, N: N, C: C)
        unembedForward(logits: logits, x: out, wU: wU, bU: bU, R: N, C: C, V: V)
    }

    /// Row `z (V)` of the logits of residual `x (C)` (divided by `sigma`) with neuron `neurons[i]`
    /// moved by `c` for each `(i, c)` of `deltas`, into `out (V)`.
    public func ablate(z: ConstFloatPointer, x: ConstFloatPointer, sigma: Float, deltas: [(index: Int, c: Double)], out: FloatPointer) {
        var scaleAfter = Double(sigma)
        if case .standard(let eps) = mode {
            let mean = (0..<C).reduce(0.0) { $0 + Double(x[$1]) } / Double(C)
            var square = 0.0
            for c in 0..<C {
                var v = Double(x[c]) - mean
                for d in deltas { v += d.c * centred[d.index * C + c] }
                square += v * v
            }
            scaleAfter = (square / Double(C) + Double(eps)).squareRoot()
        }
        let alpha = Float(Double(sigma) / scaleAfter), keep = 1 - alpha
        offset.withUnsafeBufferPointer { k in
            for v in 0..<V { out[v] = alpha * z[v] + keep * k[v] }
        }
        directions.withUnsafeBufferPointer { u in
            for d in deltas {
                let beta = Float(d.c / scaleAfter), row = u.baseAddress! + d.index * V
                for v in 0..<V { out[v] += beta * row[v] }
            }
        }
    }
}
