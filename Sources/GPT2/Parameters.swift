import Foundation
import Support
import TensorCore

/// One tensor of a model's parameter table: its name, shape, and where it lives in the flat
/// buffer every copy of the parameters shares (weights, gradients, optimizer moments).
public struct ParameterEntry: Sendable, Equatable {
    /// The checkpoint's canonical name (`h.0.attn.c_attn.weight`), or for derived tensors
    /// `unembed.weight` / `unembed.bias`.
    public let name: String
    /// As stored in the checkpoint (Conv1D weights `[in, out]`).
    public let shape: [Int]
    /// Offset in floats into the flat buffer.
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
    /// A tensor of the checkpoint (imported, exported, given a gradient under its name) rather
    /// than one lnlens derives (the processed or bias-free unembedding).
    public let isCheckpointTensor: Bool
}

/// The parameter table of a GPT-2: every tensor, in the checkpoint's import order
/// (`Checkpoint.expectedShapes`), then the unembedding. The one description of the parameters
/// that import, weight processing, export, gradients and the optimizer all use.
///
/// The unembedding `W_U (V, C)` is `wte` itself (tied, unprocessed), `lm_head.weight` (untied,
/// unprocessed), or its own `unembed.weight` (processed: folding and centring make it differ).
/// `b_U (V)` is always `unembed.bias`, zero unless processing gives it a value.
public struct ParameterTable: Sendable {
    public let config: GPT2Config
    public let entries: [ParameterEntry]
    /// Floats in the flat buffer.
    public let count: Int
    /// Name of the entry holding W_U.
    public let unembeddingName: String
    private let index: [String: Int]

    /// `storedLMHead`: the checkpoint holds `lm_head.weight` (used as W_U only when
    /// `tie_word_embeddings` is false, as in transformers). `separateUnembedding`: W_U gets its own
    /// entry (weight processing).
    public init(config: GPT2Config, storedLMHead: Bool, separateUnembedding: Bool) {
        self.config = config
        var entries: [ParameterEntry] = []
        var offset = 0
        func add(_ name: String, _ shape: [Int], checkpoint: Bool) {
            entries.append(ParameterEntry(name: name, shape: shape, offset: offset, isCheckpointTensor: checkpoint))
            offset += (shape.reduce(1, *) + 15) & ~15
        }
        for (name, shape) in Checkpoint.expectedShapes(for: config, untiedUnembedding: storedLMHead) {
            add(name, shape, checkpoint: true)
        }
        if separateUnembedding { add("unembed.weight", [config.dVocab, config.dModel], checkpoint: false) }
        add("unembed.bias", [config.dVocab], checkpoint: false)
        self.entries = entries
        self.count = offset
        self.unembeddingName = separateUnembedding
            ? "unembed.weight" : (storedLMHead && !config.tieWordEmbeddings ? "lm_head.weight" : "wte.weight")
        self.index = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.name, $0) })
    }

    public func entry(_ name: String) -> ParameterEntry? { index[name].map { entries[$0] } }

    /// The entries a checkpoint holds, in order.
    public var checkpointEntries: [ParameterEntry] { entries.filter(\.isCheckpointTensor) }
}

/// A LayerNorm's affine part: `w`, `b` (C).
public struct LayerNormWeights {
    public let w: FloatPointer       // (C)
    public let b: FloatPointer       // (C)
}

/// One block's parameters: views into a `ModelParameters` buffer. Shapes (C = d_model, M = d_mlp):
public struct BlockParameters {
    /// ln_1's affine part as the forward applies it: nil once folded into W_QKV (`fold_ln`).
    public internal(set) var ln1: LayerNormWeights?
    /// ln_2's, nil once folded into W_in.
    public internal(set) var ln2: LayerNormWeights?
    /// The `ln_1.weight`, `ln_1.bias`, `ln_2.weight`, `ln_2.bias` entries themselves (left in
    /// place by folding, which reads them; training rescales them).
    public let ln1W: FloatPointer    // (C)
    public let ln1B: FloatPointer    // (C)
    public let wQKV: FloatPointer    // (C, 3C)  q | k | v columns, head h at h·dh inside each
    public let bQKV: FloatPointer    // (3C)
    public let wO: FloatPointer      // (C, C)   row h·dh + e is W_O[h, e, :]
    public let bO: FloatPointer      // (C)
    public let ln2W: FloatPointer    // (C)
    public let ln2B: FloatPointer    // (C)
    public let wIn: FloatPointer     // (C, M)
    public let bIn: FloatPointer     // (M)
    public let wOut: FloatPointer    // (M, C)
    public let bOut: FloatPointer    // (C)
}

/// One copy of a model's parameters (the weights, their gradients, or an optimizer moment):
/// one allocation laid out by a `ParameterTable`, with typed views.
public final class ModelParameters: @unchecked Sendable {
    // @unchecked: the buffer is written by one pass or optimizer step at a time.
    public let table: ParameterTable
    public let arena: Arena

    public let wE: FloatPointer      // (V, C)
    public let wPos: FloatPointer    // (nCtx, C)
    public private(set) var blocks: [BlockParameters]
    public let lnFW: FloatPointer    // (C) the `ln_f.weight` entry
    public let lnFB: FloatPointer    // (C)
    /// ln_f's affine part as the forward applies it: nil once folded into W_U (`fold_ln`).
    public private(set) var lnF: LayerNormWeights?
    /// The LayerNorms' affine parts are folded into the layers that read them (`process`).
    public private(set) var lnFolded = false
    public let wU: FloatPointer      // (V, C)  row v is TransformerLens's W_U[:, v]
    public let bU: FloatPointer      // (V)

    /// A zero-filled copy laid out by `table`.
    public init(table: ParameterTable) throws(MemoryError) {
        self.table = table
        arena = try Arena(capacity: table.count)
        let base = arena.base
        func view(_ name: String) -> FloatPointer { base + table.entry(name)!.offset }
        wE = view("wte.weight")
        wPos = view("wpe.weight")
        blocks = (0..<table.config.nLayers).map { l in
            let p = "h.\(l)."
            return BlockParameters(
                ln1: LayerNormWeights(w: view(p + "ln_1.weight"), b: view(p + "ln_1.bias")),
                ln2: LayerNormWeights(w: view(p + "ln_2.weight"), b: view(p + "ln_2.bias")),
                ln1W: view(p + "ln_1.weight"), ln1B: view(p + "ln_1.bias"),
                wQKV: view(p + "attn.c_attn.weight"), bQKV: view(p + "attn.c_attn.bias"),
                wO: view(p + "attn.c_proj.weight"), bO: view(p + "attn.c_proj.bias"),
                ln2W: view(p + "ln_2.weight"), ln2B: view(p + "ln_2.bias"),
                wIn: view(p + "mlp.c_fc.weight"), bIn: view(p + "mlp.c_fc.bias"),
                wOut: view(p + "mlp.c_proj.weight"), bOut: view(p + "mlp.c_proj.bias"))
        }
        lnFW = view("ln_f.weight")
        lnFB = view("ln_f.bias")
        lnF = LayerNormWeights(w: lnFW, b: lnFB)
        wU = view(table.unembeddingName)
        bU = view("unembed.bias")
    }

    /// The values of entry `name` as a tensor of its shape.
    public func tensor(_ name: String) -> Tensor? {
        guard let e = table.entry(name) else { return nil }
        return Tensor(shape: e.shape, data: Array(UnsafeBufferPointer(start: arena.base + e.offset, count: e.count)))
    }

    /// Overwrites entry `name` with `values` (same count).
    public func set(_ name: String, _ values: [Float]) {
        let e = table.entry(name)!
        precondition(values.count == e.count, "\(name): \(values.count) values for \(e.count)")
        values.withUnsafeBufferPointer { (arena.base + e.offset).update(from: $0.baseAddress!, count: e.count) }
    }

    /// Copies every float from `other` (same table), and whether its LayerNorms are folded.
    public func copy(from other: ModelParameters) {
        precondition(other.table.count == table.count)
        arena.base.update(from: other.arena.base, count: table.count)
        if other.lnFolded { markLayerNormsFolded() }
    }

    /// From now on the forward applies no LayerNorm weights: they are folded into the next layers.
    func markLayerNormsFolded() {
        lnFolded = true
        for l in blocks.indices {
            blocks[l].ln1 = nil
            blocks[l].ln2 = nil
        }
        lnF = nil
    }

    /// The checkpoint tensors under their canonical names (for export and `--param-grads`).
    public func checkpointTensors() -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for e in table.checkpointEntries { out[e.name] = tensor(e.name)! }
        return out
    }
}
