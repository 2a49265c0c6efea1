import Foundation
import Support

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
    /// GPT-2's LayerNorm epsilon (transformers' default): `sqrt(var + 1e-5)`.
    public static let defaultLayerNormEpsilon = 1e-5
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
        layerNormEpsilon = try c.decodeIfPresent(Double.self, forKey: .layerNormEpsilon) ?? Self.defaultLayerNormEpsilon
        activationFunction = try c.decodeIfPresent(String.self, forKey: .activationFunction) ?? "gelu_new"
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? true
        scaleAttnWeights = try c.decodeIfPresent(Bool.self, forKey: .scaleAttnWeights) ?? true
        scaleAttnByInverseLayerIdx = try c.decodeIfPresent(Bool.self, forKey: .scaleAttnByInverseLayerIdx) ?? false
    }

    public init(dModel: Int, nLayers: Int, nHeads: Int, nCtx: Int, dVocab: Int, dMLP: Int? = nil,
                layerNormEpsilon: Double = defaultLayerNormEpsilon) {
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

extension GPT2Config {
    /// Largest values lnlens accepts, far above any GPT-2 (XL: n_embd 1600, 48 layers, 25 heads,
    /// 1024 positions, 50257 tokens). They keep every size computed from a config within memory
    /// and integer range before anything is allocated or looped over.
    public static let limits: [(key: String, max: Int)] = [
        ("n_embd", 1 << 15), ("n_layer", 1 << 10), ("n_head", 1 << 10), ("n_positions", 1 << 20),
        ("n_ctx", 1 << 20), ("vocab_size", 1 << 24), ("n_inner", 1 << 17),
    ]

    /// Decodes and checks a `config.json`: every key lnlens reads must have its JSON type (named
    /// with the key when it does not), every size must be positive and within `limits`.
    /// Errors name `file` and the key.
    public static func parse(_ data: Data, file: String) throws(GPT2Error) -> GPT2Config {
        guard let object = try? JSONSerialization.jsonObject(with: data) else {
            throw .configInvalidJSON(file: file, reason: "not valid JSON")
        }
        guard let fields = object as? [String: Any] else {
            throw .configInvalidJSON(file: file, reason: "not a JSON object")
        }
        try checkTypes(fields, file: file)
        func bad(_ key: String, _ reason: String) -> GPT2Error { .configBadValue(file: file, key: key, reason: reason) }
        let config: GPT2Config
        do {
            // Decode the object just checked, not `data` again: of a key given twice,
            // JSONSerialization keeps the last (as Python's json does) and JSONDecoder the first,
            // which would let an unchecked value through.
            config = try JSONDecoder().decode(GPT2Config.self, from: JSONSerialization.data(withJSONObject: fields))
        } catch DecodingError.keyNotFound(let key, _) {
            throw .configMissingKey(file: file, key: key.stringValue == "n_ctx" ? "n_positions" : key.stringValue)
        } catch DecodingError.valueNotFound(_, let context) {
            let key = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw .configMissingKey(file: file, key: key == "n_ctx" ? "n_positions" : key)
        } catch {
            throw .configInvalidJSON(file: file, reason: "\(error)".split(separator: "\n").joined(separator: " "))
        }
        guard config.dModel % config.nHeads == 0 else {
            throw bad("n_embd", "(\(config.dModel)) must be divisible by n_head (\(config.nHeads))")
        }
        // gelu_new, gelu_pytorch_tanh and gelu_fast are the same tanh approximation that lnlens computes.
        guard ["gelu_new", "gelu_pytorch_tanh", "gelu_fast"].contains(config.activationFunction) else {
            throw bad("activation_function", "is '\(config.activationFunction)'; lnlens computes GPT-2's gelu_new only")
        }
        guard config.layerNormEpsilon > 0, config.layerNormEpsilon.isFinite else {
            throw bad("layer_norm_epsilon", "must be a positive finite number")
        }
        return config
    }

    /// The JSON type of every key lnlens reads, and the sizes' ranges (`parse`'s first step).
    private static func checkTypes(_ fields: [String: Any], file: String) throws(GPT2Error) {
        func bad(_ key: String, _ reason: String) -> GPT2Error { .configBadValue(file: file, key: key, reason: reason) }
        if let type = fields["model_type"] {
            guard let name = type as? String else { throw bad("model_type", "must be a string") }
            guard name == "gpt2" else { throw bad("model_type", "is \"\(name)\"; lnlens runs GPT-2 models only") }
        }
        // Types first, so that the messages name the key and what it must be.
        for key in ["n_embd", "n_layer", "n_head", "n_positions", "n_ctx", "vocab_size", "n_inner"] {
            guard let value = fields[key], !(value is NSNull) else { continue }
            guard case .integer(let n) = JSONKind(value) else {
                throw bad(key, "must be an integer, not \(JSONKind(value).shown)")
            }
            guard n > 0 else { throw bad(key, "must be positive, not \(n)") }
            if let limit = limits.first(where: { $0.key == key })?.max, n > limit {
                throw bad(key, "is \(n); lnlens accepts at most \(limit) (is the file corrupt?)")
            }
        }
        if let value = fields["layer_norm_epsilon"], !(value is NSNull) {
            switch JSONKind(value) {
            case .integer, .number: break
            default: throw bad("layer_norm_epsilon", "must be a number, not \(JSONKind(value).shown)")
            }
        }
        if let value = fields["activation_function"], !(value is NSNull), !(value is String) {
            throw bad("activation_function", "must be a string, not \(JSONKind(value).shown)")
        }
        for key in ["tie_word_embeddings", "scale_attn_weights", "scale_attn_by_inverse_layer_idx"] {
            if let value = fields[key], !(value is NSNull), JSONKind(value) != .bool {
                throw bad(key, "must be true or false, not \(JSONKind(value).shown)")
            }
        }
    }
}

