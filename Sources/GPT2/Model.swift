import Foundation
import Support
import TensorCore

/// A GPT-2 ready to run: config, LN mode and (processed) parameters.
public final class GPT2Model: @unchecked Sendable {
    // @unchecked: the parameters are read by passes and written only by an optimizer step, never both at once.
    public let config: GPT2Config
    public let lnMode: LNMode
    public let processing: ProcessingOptions
    public let parameters: ModelParameters
    /// XXH64 content hash of the checkpoint's weights (nil for a model built in memory).
    public let weightsHash: String?

    /// Reads a verified checkpoint's weights into one buffer (releasing the mapped file as it goes)
    /// and applies `processing`. As in transformers, a stored `lm_head.weight` is W_U only when
    /// `tie_word_embeddings` is false.
    public init(checkpoint: Checkpoint, processing: ProcessingOptions = .all) throws {
        let table = ParameterTable(config: checkpoint.config, storedLMHead: checkpoint.hasUntiedUnembedding,
                                   separateUnembedding: !processing.isNone)
        let parameters = try ModelParameters(table: table)
        weightsHash = try checkpoint.load(into: parameters)
        parameters.process(processing)
        config = checkpoint.config
        lnMode = checkpoint.config.lnMode
        self.processing = processing
        self.parameters = parameters
    }

    /// A model around parameters already in memory (laid out for `config`), processed with
    /// `processing` here unless `alreadyProcessed`.
    public init(config: GPT2Config, parameters: ModelParameters, processing: ProcessingOptions = .none,
                alreadyProcessed: Bool = false, weightsHash: String? = nil) {
        if !alreadyProcessed { parameters.process(processing) }
        self.config = config
        self.lnMode = config.lnMode
        self.processing = processing
        self.parameters = parameters
        self.weightsHash = weightsHash
    }

    /// LayerNorm weights and biases are folded into the next layer: LNs only centre and normalise.
    public var lnFolded: Bool { processing.foldLN }

    /// The denominator of every LayerNorm: `sqrt(var + eps)`, or the constant `sqrt(eps)` that an
    /// LN-free checkpoint encodes (its `hook_scale` is that constant at every position).
    public var layerNormScale: LayerNormScale {
        switch lnMode {
        case .layerNorm: .standard(eps: Float(config.layerNormEpsilon))
        case .lnFree: .fixed(Float(config.layerNormEpsilon.squareRoot()))
        }
    }

    /// Every LayerNorm as this model computes it.
    public var layerNormPlan: LayerNormPlan {
        LayerNormPlan(uniform: layerNormScale, nLayers: config.nLayers,
                      rawEps: lnMode == .layerNorm ? Float(config.layerNormEpsilon) : Float(GPT2Config.defaultLayerNormEpsilon))
    }

    /// Validates a batch of token id lists: non-empty, equal lengths, within context and vocabulary.
    public func checkTokens(_ tokens: [[Int]]) throws(GPT2Error) {
        guard let first = tokens.first, !first.isEmpty else { throw .emptyPrompt }
        for (i, t) in tokens.enumerated() {
            guard !t.isEmpty else { throw .emptyPrompt }
            guard t.count == first.count else { throw .unequalLengths(first: first.count, other: t.count, index: i) }
            if let bad = t.first(where: { $0 < 0 || $0 >= config.dVocab }) {
                throw .tokenOutOfRange(id: bad, dVocab: config.dVocab)
            }
        }
        guard first.count <= config.nCtx else { throw .promptTooLong(tokens: first.count, nCtx: config.nCtx) }
    }

    /// Runs the batch `tokens` (B prompts of equal length T), caching the hooks in `cache` and
    /// applying `interventions` at their hook points in the order given.
    public func forward(_ tokens: [[Int]], cache: Set<HookName> = [], interventions: [Intervention] = [],
                        logits: LogitPositions = .all) throws(GPT2Error) -> ForwardResult {
        let pass = try run(tokens, ForwardOptions(cache: cache, interventions: interventions, logits: logits))
        return ForwardResult(tokens: tokens, logits: pass.logitsTensor(V: config.dVocab), cache: pass.cache, pass: pass)
    }
}
