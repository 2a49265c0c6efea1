import Foundation

/// What a `dla` run attributes: the last position of each prompt of a prompt set, or positions
/// of a plain text.
public enum AttributionInput: Sendable {
    case prompts(PromptSet)
    case text(TextPrompts, TextTargets = .nextToken)

    public var path: String {
        switch self {
        case .prompts(let p): p.path
        case .text(let t, _): t.path
        }
    }

    public var contentHash: String {
        switch self {
        case .prompts(let p): p.contentHash
        case .text(let t, _): t.contentHash
        }
    }

    /// Forward sequences, each with the targets it carries, in prompt-index order.
    public var units: [AttributionUnit] {
        switch self {
        case .prompts(let set):
            return set.examples.map { ex in
                AttributionUnit(tokens: ex.tokens, targets: [
                    .init(prompt: ex.index, position: ex.tokens.count - 1, answerID: ex.answerID, wrongID: ex.wrongID,
                          text: ex.prompt, answer: ex.answer, wrong: ex.wrong),
                ], corruptTokens: ex.corruptTokens)
            }
        case .text(let text, .lastTokenOfWindow):
            return text.windows.enumerated().map { i, w in
                let last = w.tokens.count - 1
                return AttributionUnit(tokens: w.tokens, targets: [
                    .init(prompt: i, position: last, answerID: w.tokens[last], wrongID: nil, text: nil, answer: nil,
                          wrong: nil),
                ])
            }
        case .text(let text, .nextToken):
            var next = 0
            return text.windows.map { w in
                let targets = (0..<(w.tokens.count - 1)).map { p in
                    defer { next += 1 }
                    return AttributionUnit.Target(prompt: next, position: p, answerID: w.tokens[p + 1], wrongID: nil,
                                                  text: nil, answer: nil, wrong: nil)
                }
                return AttributionUnit(tokens: w.tokens, targets: targets)
            }
        }
    }

    public var count: Int {
        switch self {
        case .prompts(let p): p.examples.count
        case .text(let t, .nextToken): t.predictedPositions
        case .text(let t, .lastTokenOfWindow): t.windows.count
        }
    }
}

/// Which positions of a text are attributed, and to which token.
public enum TextTargets: String, Sendable {
    /// Every position, to the actual next token (next-token prediction on the text).
    case nextToken = "next-token"
    /// Only the last position of each window, to the token at that position: what the paper's
    /// `attention_head_attribution/run_analysis.py` does (`target_tokens = batch[:, -1]`), for
    /// reproducing its figures exactly.
    case lastTokenOfWindow = "paper"
}

/// One forward sequence and the positions of it that are attributed.
public struct AttributionUnit: Sendable {
    public struct Target: Sendable {
        public var prompt: Int, position: Int, answerID: Int, wrongID: Int?
        public var text: String?, answer: String?, wrong: String?
    }
    public var tokens: [Int]
    public var targets: [Target]
    /// The prompt's corrupted version (prompt sets with `corrupt`; same length as `tokens`): its
    /// logit difference gives the task check's clean − corrupt gap.
    public var corruptTokens: [Int]? = nil
}
