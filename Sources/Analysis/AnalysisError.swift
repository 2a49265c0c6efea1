import Foundation
import Support

/// What is wrong with one line of a prompt file. The same value is the error (without
/// `--skip-invalid`) and the recorded reason of a skipped line (with it).
public enum PromptProblem: Equatable, Sendable, CustomStringConvertible {
    case badJSON(reason: String)
    case notAnObject
    case missingKey(String)
    case wrongType(key: String, expected: String)
    case emptyPrompt
    /// `key` is "answer" or "wrong"; `tokens` is what the text tokenized to.
    case notOneToken(key: String, text: String, tokens: [Int])
    case corruptLengthMismatch(promptTokens: Int, corruptTokens: Int)
    case answerIsWrong(text: String)
    /// Checked against the model: longer than its context, or a token its vocabulary lacks.
    case tooLong(tokens: Int, nCtx: Int)
    case tokenOutsideVocabulary(id: Int, dVocab: Int)

    /// What was wrong, without the file and line.
    public var description: String {
        switch self {
        case let .badJSON(reason): "not valid JSON (\(reason))"
        case .notAnObject: "the line is JSON but not an object"
        case let .missingKey(key): "missing key \"\(key)\""
        case let .wrongType(key, expected): "key \"\(key)\" must be \(expected)"
        case .emptyPrompt: "the prompt is empty"
        case let .notOneToken(key, text, tokens):
            "\(key) \(JSONText.quoted(text)) is \(tokens.count) tokens (\(tokens)); \(key == "answer" ? "answers" : "wrong answers") must be one token"
        case let .answerIsWrong(text): "\"answer\" and \"wrong\" are the same token (\(text.debugDescription)), so the logit difference is always 0"
        case let .corruptLengthMismatch(p, c):
            "corrupt is \(c) tokens but prompt is \(p); corrupt must tokenize to the same length as prompt"
        case let .tooLong(tokens, nCtx):
            "the prompt is \(tokens) tokens but the model's context (n_positions) is \(nCtx)"
        case let .tokenOutsideVocabulary(id, dVocab):
            "token id \(id) is outside the model's vocabulary (vocab_size \(dVocab))"
        }
    }

    /// What the user can do about it.
    var remedy: String {
        switch self {
        case .badJSON, .notAnObject:
            "write one JSON object per line, e.g. {\"prompt\": \"...\", \"answer\": \" Mary\"}"
        case .missingKey, .wrongType:
            "every line needs string keys \"prompt\" and \"answer\" (\"wrong\", \"corrupt\" optional)"
        case .emptyPrompt: "give some prompt text"
        case let .notOneToken(key, _, _):
            "pick a one-token \(key) (usually with a leading space)"
        case .answerIsWrong: "give a contrasting \"wrong\" answer"
        case .corruptLengthMismatch:
            "swap in words of equal token length"
        case .tooLong: "shorten the prompt"
        case .tokenOutsideVocabulary: "use a model whose tokenizer matches its vocabulary"
        }
    }
}

/// Errors of the Analysis module. Each message is one line that names the file, line or option
/// and says what to do.
public enum AnalysisError: LocalizedError, Equatable, Sendable {
    // Prompt sets (JSONL).
    case promptFileUnreadable(path: String, reason: String)
    case invalidPrompt(path: String, line: Int, problem: PromptProblem)
    case noValidPrompts(path: String, skipped: Int)
    // Plain-text mode.
    case textFileUnreadable(path: String, reason: String)
    case textNotUTF8(path: String)
    case textTooShort(path: String, tokens: Int)
    case contextTooSmall(context: Int)
    case maxTokensTooSmall(maxTokens: Int)
    // Dataset rows (dla --dataset).
    case rowsTooShort(path: String, rows: Int, context: Int)
    // Prompt generation.
    case generationCountInvalid(n: Int)
    case tooFewSingleTokenWords(task: String, kind: String, found: Int, needed: Int)
    case tokenizerFolderNotFound(searched: [String])
    case outputUnwritable(path: String, reason: String)
    // Runs.
    // Patching.
    case unknownName(option: String, name: String, known: [String])
    case patchPromptIncomplete(path: String, line: Int, missing: String)
    case freezeWithAtPStar(option: String)
    // Entropy neurons.
    case neuronOutOfRange(neuron: Int, dMLP: Int)
    case eigensolverFailed(what: String)

    public var errorDescription: String? {
        switch self {
        case let .neuronOutOfRange(neuron, dMLP):
            "--neurons: neuron \(neuron) is not in the last MLP (neurons 0..\(dMLP - 1)); give indices below d_mlp = \(dMLP)"
        case let .eigensolverFailed(what):
            "LAPACK's eigensolver (dsyevd) failed on \(what); check the model's weights for NaN or infinite values (lnlens inspect)"
        case let .promptFileUnreadable(path, reason):
            "\(path): cannot read the prompt file (\(reason)); check the path"
        case let .invalidPrompt(path, line, problem):
            "\(path):\(line): \(problem) — \(problem.remedy) or pass --skip-invalid"
        case let .noValidPrompts(path, skipped):
            skipped == 0
                ? "\(path): the file holds no prompts; write one JSON object per line"
                : "\(path): all \(skipped) lines are invalid; run without --skip-invalid to see the first problem"
        case let .textFileUnreadable(path, reason):
            "\(path): cannot read the text file (\(reason)); check the path"
        case let .textNotUTF8(path):
            "\(path): the text file is not valid UTF-8; convert it (e.g. iconv -t UTF-8)"
        case let .textTooShort(path, tokens):
            "\(path): the text is \(tokens) token\(tokens == 1 ? "" : "s"); at least 2 are needed to predict one next token"
        case let .contextTooSmall(context):
            "--context \(context) is too small: a window needs at least 2 tokens"
        case let .maxTokensTooSmall(maxTokens):
            "--max-tokens \(maxTokens) is too small: give at least 1"
        case let .rowsTooShort(path, rows, context):
            "\(path): all \(rows) rows read are shorter than --context \(context) tokens (each row's first \(context) tokens are attributed); give a smaller --context or longer rows"
        case let .generationCountInvalid(n):
            "--n \(n): give a positive number of prompts"
        case let .tooFewSingleTokenWords(task, kind, found, needed):
            "\(task): only \(found) \(kind) are single tokens under this tokenizer, \(needed) needed; use the GPT-2 tokenizer (models/tokenizer)"
        case let .tokenizerFolderNotFound(searched):
            "no tokenizer folder (vocab.json + merges.txt) found in \(searched.joined(separator: ", ")); pass --tokenizer DIR or set LNLENS_HOME to the lnlens checkout"
        case let .outputUnwritable(path, reason):
            "\(path): cannot write the output (\(reason)); check that the folder exists and is writable"
        case let .unknownName(option, name, known):
            "\(option): unknown '\(name)'; use a comma-separated list of \(known.joined(separator: ", "))"
        case let .patchPromptIncomplete(path, line, missing):
            "\(path):\(line): patching needs \(missing) on every line (a contrasting one-token answer and a corrupted prompt of the same token length); add it or pass --skip-invalid"
        case let .freezeWithAtPStar(option):
            "\(option): AtP* is not computed on a linearised model (its QK fix recomputes the patterns that --freeze attention fixes); give --methods activation,atp"
        }
    }
}
