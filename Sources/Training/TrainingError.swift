import Foundation

/// What stops `train`, `remove-ln` or `eval`: one line naming the file or option and what to do.
public enum TrainingError: Error, LocalizedError, Equatable {
    case corpusEmpty(file: String)
    case unreadable(file: String, reason: String)
    case corpusTooSmall(file: String, tokens: Int, needed: Int, sequences: Int, seqLen: Int)
    case textTooShort(file: String, tokens: Int, context: Int)
    /// A dataset none of whose documents fills one window.
    case noWindows(file: String, cut: DocumentCut)
    case badOption(option: String, reason: String)
    case scheduleTooLong(lastEvent: Int, what: String, option: String, steps: Int)
    case recipeDepth(recipe: String, config: String, recipeLayers: Int, model: String, modelLayers: Int, tail: Int, lnFinal: Int, steps: Int)
    case removalIncomplete(checkpoint: String, stepsDone: Int, pending: String, at: Int)
    case checkpointStepMissing(directory: String, step: Int, kept: [Int])
    case seqLenTooLong(seqLen: Int, nCtx: Int)
    case checkpointMissing(directory: String)
    case checkpointCorrupt(file: String, reason: String)
    case vocabularyMismatch(model: String, dVocab: Int, other: String, otherVocab: Int)
    case nonFiniteLoss(step: Int)

    public var errorDescription: String? {
        switch self {
        case let .unreadable(file, reason):
            "\(file) \(reason): give a UTF-8 text file (documents separated by lines <|endoftext|>)"
        case let .corpusEmpty(file):
            "\(file): the corpus holds no text; give a UTF-8 text file (documents separated by lines <|endoftext|>)"
        case let .corpusTooSmall(file, tokens, needed, sequences, seqLen):
            "\(file): \(tokens) tokens is too small for one batch of \(sequences) sequences of \(seqLen) tokens (\(needed) tokens); give a larger corpus or lower --batch-tokens / --seq-len"
        case let .textTooShort(file, tokens, context):
            "\(file): \(tokens) tokens is shorter than one window of --context \(context) tokens; give more text or a smaller --context"
        case let .noWindows(file, cut):
            "\(file): none of its \(cut.documents) documents is \(cut.window) tokens long with its end-of-text token, and windows never cross documents; give a smaller --seq-len / --context or longer documents"
        case let .badOption(option, reason):
            "\(option): \(reason)"
        case let .scheduleTooLong(lastEvent, what, option, steps):
            "the LayerNorm removal schedule ends at step \(lastEvent) (\(what)) but \(option) is \(steps); raise \(option) above \(lastEvent) or start the schedule earlier"
        case let .recipeDepth(recipe, config, recipeLayers, model, modelLayers, tail, lnFinal, steps):
            "--recipe \(recipe) is config.py's \(config) for \(recipeLayers)-layer models but \(model) has \(modelLayers) layers; add --scaled to apply it by the scaling rule (the same starts, per-block gaps and \(tail) steps after ln_f: here ln_f at step \(lnFinal), \(steps) steps), or use --recipe quick"
        case let .removalIncomplete(checkpoint, stepsDone, pending, at):
            "\(checkpoint): after \(stepsDone) steps \(pending) is still a real LayerNorm (removed at step \(at)); export a checkpoint of a step above \(at), or the run with --keep-ln"
        case let .checkpointStepMissing(directory, step, kept):
            "\(directory) holds no checkpoint of step \(step)"
                + (kept.isEmpty ? "; it holds none: train with --save-every N --keep-all to keep them"
                    : " (kept: \(kept.map(String.init).joined(separator: ", "))); give one of those, or train with --save-every N --keep-all")
        case let .seqLenTooLong(seqLen, nCtx):
            "--seq-len \(seqLen) is longer than the model's context (n_positions \(nCtx)); use at most \(nCtx)"
        case let .checkpointMissing(directory):
            "\(directory): no training checkpoint to resume from (checkpoints/step-*/state.json); run without --resume to start, or point --out at the interrupted run's folder"
        case let .checkpointCorrupt(file, reason):
            "\(file): the training checkpoint is unreadable (\(reason)); delete this step-* folder to resume from the one before it"
        case let .vocabularyMismatch(model, dVocab, other, otherVocab):
            "\(other) has vocab_size \(otherVocab) but \(model) has \(dVocab); models compared on one text must share a tokenizer"
        case let .nonFiniteLoss(step):
            "the loss became NaN or infinite at step \(step); start the training again with a lower --lr (and --force to replace --out): a resume keeps the options, so it would diverge again"
        }
    }
}
