import Foundation
import TensorCore

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

    /// Whether the parameters are the checkpoint's own (gradients and export need that).
    public var isNone: Bool { self == .none }

    enum CodingKeys: String, CodingKey {
        case foldLN = "fold_ln", centerWritingWeights = "center_writing_weights"
        case centerUnembed = "center_unembed", foldValueBiases = "fold_value_biases"
    }

    /// The switches as a run records them (`runs.processing_json`): a JSON object with sorted
    /// keys, so that the same switches give the same text (resume and merge compare it).
    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return String(decoding: (try? encoder.encode(self)) ?? Data("{}".utf8), as: UTF8.self)
    }

    public var description: String {
        "fold_ln=\(foldLN) center_writing_weights=\(centerWritingWeights) center_unembed=\(centerUnembed) fold_value_biases=\(foldValueBiases)"
    }
}

extension ModelParameters {
    /// Applies TransformerLens's processing in its order: fold_ln, center_writing_weights,
    /// center_unembed, fold_value_biases. The model computes the same function afterwards up to a
    /// per-position constant in the logits (from center_unembed). Needs a table with a separate
    /// unembedding unless `options` is `.none`. After `foldLN` the LayerNorm weight and bias
    /// entries are left as they were and must not be applied again: `BlockParameters.ln1`,
    /// `ln2` and `lnF` become nil.
    public func process(_ options: ProcessingOptions) {
        let cfg = table.config
        let C = cfg.dModel, M = cfg.dMLP, V = cfg.dVocab
        precondition(options.isNone || table.unembeddingName == "unembed.weight", "processing needs its own W_U")
        if options.foldLN {
            for b in blocks {
                foldLayerNorm(w: b.ln1W, b: b.ln1B, into: b.wQKV, bias: b.bQKV, rows: C, cols: 3 * C)
                foldLayerNorm(w: b.ln2W, b: b.ln2B, into: b.wIn, bias: b.bIn, rows: C, cols: M)
            }
            // W_U is stored transposed (V, C): fold over its columns, centre each row.
            for v in 0..<V {
                let row = wU + v * C
                var acc: Float = 0
                for c in 0..<C { acc += lnFB[c] * row[c] }
                bU[v] += acc
                var mean: Float = 0
                for c in 0..<C { row[c] *= lnFW[c]; mean += row[c] }
                mean /= Float(C)
                for c in 0..<C { row[c] -= mean }
            }
            markLayerNormsFolded()
        }
        if options.centerWritingWeights {
            centerRows(wE, rows: V, cols: C)
            centerRows(wPos, rows: cfg.nCtx, cols: C)
            for b in blocks {
                centerRows(b.wO, rows: C, cols: C)
                centerRows(b.bO, rows: 1, cols: C)
                centerRows(b.wOut, rows: M, cols: C)
                centerRows(b.bOut, rows: 1, cols: C)
            }
        }
        if options.centerUnembed {
            // W_U[d, :] -= mean over the vocabulary, i.e. column means of the (V, C) layout.
            var means = [Double](repeating: 0, count: C)
            for v in 0..<V { for c in 0..<C { means[c] += Double(wU[v * C + c]) } }
            for v in 0..<V { for c in 0..<C { wU[v * C + c] -= Float(means[c] / Double(V)) } }
            var bMean = 0.0
            for v in 0..<V { bMean += Double(bU[v]) }
            for v in 0..<V { bU[v] -= Float(bMean / Double(V)) }
        }
        if options.foldValueBiases {
            for b in blocks {
                // b_O += Σ_{h,e} b_V[h,e] · W_O[h,e,:]; then b_V = 0.
                for j in 0..<C {
                    let bv = b.bQKV[2 * C + j]
                    if bv == 0 { continue }
                    for c in 0..<C { b.bO[c] += bv * b.wO[j * C + c] }
                    b.bQKV[2 * C + j] = 0
                }
            }
        }
    }
}

/// Folds a LayerNorm's affine part into the matrix that reads its output, then centres that
/// matrix's input dimension (TransformerLens `fold_layer_norm` with `center_weights=True`):
/// `b += bLN · W`, `W[d, :] *= wLN[d]`, `W[:, j] -= mean_d W[d, j]`.
func foldLayerNorm(w lw: FloatPointer, b lb: FloatPointer, into W: FloatPointer, bias: FloatPointer, rows: Int, cols: Int) {
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
}

/// Subtracts each row's mean (centring a writing weight over d_model).
func centerRows(_ a: FloatPointer, rows: Int, cols: Int) {
    for r in 0..<rows {
        var mean: Float = 0
        for c in 0..<cols { mean += a[r * cols + c] }
        mean /= Float(cols)
        for c in 0..<cols { a[r * cols + c] -= mean }
    }
}
