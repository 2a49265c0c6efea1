import Foundation
import TensorCore

/// One block's parameters in GPT-2's fused layout (Conv1D weights are `[in, out]`).
///
/// Column `j` of `wQKV` is query (j < C), key (C ≤ j < 2C) or value; inside each, head `h` owns
/// columns `h·dh ..< (h+1)·dh`, so TransformerLens's `W_Q[h, :, e]` is `wQKV[:, h·dh + e]`.
/// Rows of `wO` are `h·dh + e`, so `W_O[h, e, :]` is `wO[h·dh + e, :]`.
public struct LayerWeights: Sendable {
    public var ln1W: [Float]?   // (C)   nil once folded into wQKV
    public var ln1B: [Float]?   // (C)
    public var wQKV: [Float]    // (C, 3C)
    public var bQKV: [Float]    // (3C)
    public var wO: [Float]      // (C, C)
    public var bO: [Float]      // (C)
    public var ln2W: [Float]?   // (C)
    public var ln2B: [Float]?   // (C)
    public var wIn: [Float]     // (C, M)
    public var bIn: [Float]     // (M)
    public var wOut: [Float]    // (M, C)
    public var bOut: [Float]    // (C)
}

/// All parameters of a GPT-2, after whatever weight processing was asked for.
public struct ModelWeights: Sendable {
    public var wE: [Float]      // (V, C)
    public var wPos: [Float]    // (nCtx, C)
    public var layers: [LayerWeights]
    public var lnFW: [Float]?   // (C)   nil once folded into wU
    public var lnFB: [Float]?   // (C)
    public var wU: [Float]      // (V, C)  row v is TransformerLens's W_U[:, v]
    public var bU: [Float]      // (V)

    /// Reads the checkpoint's tensors by canonical name (`h.0.attn.c_attn.weight`, …) in HF layout.
    public init(config cfg: GPT2Config, tensor: (String) throws -> Tensor, hasLMHead: Bool) throws {
        wE = try tensor("wte.weight").data
        wPos = try tensor("wpe.weight").data
        layers = try (0..<cfg.nLayers).map { l in
            let p = "h.\(l)."
            return LayerWeights(
                ln1W: try tensor(p + "ln_1.weight").data, ln1B: try tensor(p + "ln_1.bias").data,
                wQKV: try tensor(p + "attn.c_attn.weight").data, bQKV: try tensor(p + "attn.c_attn.bias").data,
                wO: try tensor(p + "attn.c_proj.weight").data, bO: try tensor(p + "attn.c_proj.bias").data,
                ln2W: try tensor(p + "ln_2.weight").data, ln2B: try tensor(p + "ln_2.bias").data,
                wIn: try tensor(p + "mlp.c_fc.weight").data, bIn: try tensor(p + "mlp.c_fc.bias").data,
                wOut: try tensor(p + "mlp.c_proj.weight").data, bOut: try tensor(p + "mlp.c_proj.bias").data)
        }
        lnFW = try tensor("ln_f.weight").data
        lnFB = try tensor("ln_f.bias").data
        wU = hasLMHead ? try tensor("lm_head.weight").data : wE
        bU = [Float](repeating: 0, count: cfg.dVocab)
    }
}

/// TransformerLens 2.x weight processing switches (`ProcessWeights`), all on by default.
public struct ProcessingOptions: Sendable, Codable, Equatable, CustomStringConvertible {
    public var foldLN: Bool
    public var centerWritingWeights: Bool
    public var centerUnembed: Bool
    public var foldValueBiases: Bool

    public init(foldLN: Bool = true, centerWritingWeights: Bool = true, centerUnembed: Bool = true,
                foldValueBiases: Bool = true) {
        self.foldLN = foldLN
        self.centerWritingWeights = centerWritingWeights
        self.centerUnembed = centerUnembed
        self.foldValueBiases = foldValueBiases
    }

    public static let all = ProcessingOptions()
    public static let none = ProcessingOptions(foldLN: false, centerWritingWeights: false, centerUnembed: false,
                                               foldValueBiases: false)

    enum CodingKeys: String, CodingKey {
        case foldLN = "fold_ln", centerWritingWeights = "center_writing_weights"
        case centerUnembed = "center_unembed", foldValueBiases = "fold_value_biases"
    }

    public var description: String {
        "fold_ln=\(foldLN) center_writing_weights=\(centerWritingWeights) center_unembed=\(centerUnembed) fold_value_biases=\(foldValueBiases)"
    }
}

extension ModelWeights {
    /// Applies TransformerLens's processing in its order: fold_ln, center_writing_weights,
    /// center_unembed, fold_value_biases. The model computes the same function afterwards
    /// up to a per-position constant in the logits (from center_unembed).
    public mutating func process(_ options: ProcessingOptions, config cfg: GPT2Config) {
        let C = cfg.dModel, M = cfg.dMLP, V = cfg.dVocab
        if options.foldLN {
            for l in layers.indices {
                var L = layers[l]
                foldLayerNorm(w: &L.ln1W, b: &L.ln1B, into: &L.wQKV, bias: &L.bQKV, rows: C, cols: 3 * C)
                foldLayerNorm(w: &L.ln2W, b: &L.ln2B, into: &L.wIn, bias: &L.bIn, rows: C, cols: M)
                layers[l] = L
            }
            // W_U is stored transposed (V, C): fold over its columns.
            if let w = lnFW, let b = lnFB {
                for v in 0..<V {
                    var acc: Float = 0
                    for c in 0..<C { acc += b[c] * wU[v * C + c] }
                    bU[v] += acc
                    var mean: Float = 0
                    for c in 0..<C { wU[v * C + c] *= w[c]; mean += wU[v * C + c] }
                    mean /= Float(C)
                    for c in 0..<C { wU[v * C + c] -= mean }
                }
                lnFW = nil
                lnFB = nil
            }
        }
        if options.centerWritingWeights {
            centerRows(&wE, rows: V, cols: C)
            centerRows(&wPos, rows: cfg.nCtx, cols: C)
            for l in layers.indices {
                centerRows(&layers[l].wO, rows: C, cols: C)
                centerRows(&layers[l].bO, rows: 1, cols: C)
                centerRows(&layers[l].wOut, rows: M, cols: C)
                centerRows(&layers[l].bOut, rows: 1, cols: C)
            }
        }
        if options.centerUnembed {
            // W_U[d, :] -= mean over the vocabulary, i.e. column means of the (V, C) layout.
            var means = [Double](repeating: 0, count: C)
            for v in 0..<V { for c in 0..<C { means[c] += Double(wU[v * C + c]) } }
            for v in 0..<V { for c in 0..<C { wU[v * C + c] -= Float(means[c] / Double(V)) } }
            let bMean = Float(bU.reduce(0.0) { $0 + Double($1) } / Double(V))
            for v in 0..<V { bU[v] -= bMean }
        }
        if options.foldValueBiases {
            for l in layers.indices {
                // b_O += Σ_{h,e} b_V[h,e] · W_O[h,e,:]; then b_V = 0.
                for j in 0..<C {
                    let bv = layers[l].bQKV[2 * C + j]
                    if bv == 0 { continue }
                    for c in 0..<C { layers[l].bO[c] += bv * layers[l].wO[j * C + c] }
                    layers[l].bQKV[2 * C + j] = 0
                }
            }
        }
    }
}

/// Folds a LayerNorm's affine part into the matrix that reads its output, then centres that
/// matrix's input dimension (TransformerLens `fold_layer_norm` with `center_weights=True`):
/// `b += bLN · W`, `W[d, :] *= wLN[d]`, `W[:, j] -= mean_d W[d, j]`.
func foldLayerNorm(w: inout [Float]?, b: inout [Float]?, into W: inout [Float], bias: inout [Float],
                   rows: Int, cols: Int) {
    guard let lw = w, let lb = b else { return }
    for d in 0..<rows {
        let bd = lb[d]
        for j in 0..<cols { bias[j] += bd * W[d * cols + j] }
    }
    for d in 0..<rows {
        let wd = lw[d]
        for j in 0..<cols { W[d * cols + j] *= wd }
    }
    var means = [Float](repeating: 0, count: cols)
    for d in 0..<rows { for j in 0..<cols { means[j] += W[d * cols + j] } }
    for j in 0..<cols { means[j] /= Float(rows) }
    for d in 0..<rows { for j in 0..<cols { W[d * cols + j] -= means[j] } }
    w = nil
    b = nil
}

/// Subtracts each row's mean (centring a writing weight over d_model).
func centerRows(_ a: inout [Float], rows: Int, cols: Int) {
    for r in 0..<rows {
        var mean: Float = 0
        for c in 0..<cols { mean += a[r * cols + c] }
        mean /= Float(cols)
        for c in 0..<cols { a[r * cols + c] -= mean }
    }
}
