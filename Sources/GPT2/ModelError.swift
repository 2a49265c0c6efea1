import Foundation

/// Errors from running a model: bad token input, hook names, interventions.
public enum ModelError: LocalizedError, Equatable {
    case emptyPrompt
    case promptTooLong(tokens: Int, nCtx: Int)
    case tokenOutOfRange(id: Int, dVocab: Int)
    case unequalLengths(first: Int, other: Int, index: Int)
    case unknownPattern(String)
    case layerOutOfRange(String, nLayers: Int)
    case interventionShape(hook: String, expected: [Int], got: [Int])
    case positionOutOfRange(hook: String, position: Int, length: Int)
    case headOutOfRange(hook: String, head: Int, nHeads: Int)
    case headsOnNonHeadHook(hook: String)

    public var errorDescription: String? {
        switch self {
        case .emptyPrompt:
            "the prompt is empty: give at least one token of text (or pass --prepend-bos)"
        case let .promptTooLong(tokens, nCtx):
            "the prompt is \(tokens) tokens but the model's context (n_positions) is \(nCtx): shorten the prompt"
        case let .tokenOutOfRange(id, dVocab):
            "token id \(id) is outside the model's vocabulary (vocab_size \(dVocab)): use the model's own tokenizer"
        case let .unequalLengths(first, other, index):
            "prompts in one batch must have equal token counts: prompt 0 has \(first), prompt \(index) has \(other)"
        case let .unknownPattern(p):
            "no hook matches '\(p)': use a TransformerLens name (blocks.0.attn.hook_pattern), a glob (blocks.*.hook_resid_pre) or 'all'; 'lnlens inspect' lists the hooks"
        case let .layerOutOfRange(p, nLayers):
            "hook '\(p)' names a layer the model does not have (layers 0..\(nLayers - 1))"
        case let .interventionShape(hook, expected, got):
            "intervention on \(hook): the value has shape \(got) but the hook has shape \(expected)"
        case let .positionOutOfRange(hook, position, length):
            "intervention on \(hook): position \(position) is outside the prompt (length \(length))"
        case let .headOutOfRange(hook, head, nHeads):
            "intervention on \(hook): head \(head) does not exist (heads 0..\(nHeads - 1))"
        case let .headsOnNonHeadHook(hook):
            "intervention on \(hook): this hook has no head axis, so heads cannot be chosen"
        }
    }
}
