import Foundation

/// GPT-2 hyperparameters as stored in a Hugging Face `config.json`.
///
/// Key names are the file's own; optional keys fall back to GPT-2's defaults.
public struct GPT2Config: Decodable, Sendable, Equatable {
    public var dModel: Int        // n_embd
    public var nLayers: Int       // n_layer
    public var nHeads: Int        // n_head
    public var nCtx: Int          // n_positions (or legacy n_ctx)
    public var dVocab: Int        // vocab_size
    public var dMLP: Int          // n_inner ?? 4 * n_embd
    public var layerNormEpsilon: Double
    public var activationFunction: String
    public var tieWordEmbeddings: Bool
    public var scaleAttnWeights: Bool
    public var scaleAttnByInverseLayerIdx: Bool

    public var dHead: Int { dModel / nHeads }

    enum CodingKeys: String, CodingKey {
        case nEmbd = "n_embd", nLayer = "n_layer", nHead = "n_head", nPositions = "n_positions"
        case nCtx = "n_ctx", vocabSize = "vocab_size", nInner = "n_inner"
        case layerNormEpsilon = "layer_norm_epsilon", activationFunction = "activation_function"
        case tieWordEmbeddings = "tie_word_embeddings", scaleAttnWeights = "scale_attn_weights"
        case scaleAttnByInverseLayerIdx = "scale_attn_by_inverse_layer_idx"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        dModel = try c.decode(Int.self, forKey: .nEmbd)
        nLayers = try c.decode(Int.self, forKey: .nLayer)
        nHeads = try c.decode(Int.self, forKey: .nHead)
        if let n = try c.decodeIfPresent(Int.self, forKey: .nPositions) {
            nCtx = n
        } else {
            nCtx = try c.decode(Int.self, forKey: .nCtx)
        }
        dVocab = try c.decode(Int.self, forKey: .vocabSize)
        dMLP = try c.decodeIfPresent(Int.self, forKey: .nInner) ?? 4 * dModel
        layerNormEpsilon = try c.decodeIfPresent(Double.self, forKey: .layerNormEpsilon) ?? 1e-5
        activationFunction = try c.decodeIfPresent(String.self, forKey: .activationFunction) ?? "gelu_new"
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? true
        scaleAttnWeights = try c.decodeIfPresent(Bool.self, forKey: .scaleAttnWeights) ?? true
        scaleAttnByInverseLayerIdx = try c.decodeIfPresent(Bool.self, forKey: .scaleAttnByInverseLayerIdx) ?? false
    }

    public init(dModel: Int, nLayers: Int, nHeads: Int, nCtx: Int, dVocab: Int, dMLP: Int? = nil,
                layerNormEpsilon: Double = 1e-5) {
        self.dModel = dModel
        self.nLayers = nLayers
        self.nHeads = nHeads
        self.nCtx = nCtx
        self.dVocab = dVocab
        self.dMLP = dMLP ?? 4 * dModel
        self.layerNormEpsilon = layerNormEpsilon
        self.activationFunction = "gelu_new"
        self.tieWordEmbeddings = true
        self.scaleAttnWeights = true
        self.scaleAttnByInverseLayerIdx = false
    }

    /// LN-free checkpoints (Baroni et al. 2025) mark themselves with a huge epsilon.
    public var lnMode: LNMode { layerNormEpsilon >= 1e6 ? .lnFree : .layerNorm }

    /// Parameters in the checkpoint (unembedding counted once when tied).
    public var parameterCount: Int {
        let perLayer = 2 * dModel + dModel * 3 * dModel + 3 * dModel + dModel * dModel + dModel
            + 2 * dModel + dModel * dMLP + dMLP + dMLP * dModel + dModel
        return dVocab * dModel + nCtx * dModel + nLayers * perLayer + 2 * dModel
            + (tieWordEmbeddings ? 0 : dVocab * dModel)
    }
}

/// How the model normalises the residual stream.
public enum LNMode: String, Sendable, Codable {
    /// Standard GPT-2: `(x − mean x) / sqrt(var x + eps) · w + b`.
    case layerNorm = "layernorm"
    /// LN-free checkpoint: the exact linear map `(x − mean x) · w / sqrt(eps) + b`.
    case lnFree = "ln-free"
}
