import Foundation
import Support

/// The "topic" task, built for the embedded models (trained on Jane Austen's novels and
/// *Moby-Dick*): a list of nine nouns from one of the two worlds of the corpus — the sea of
/// *Moby-Dick* or the drawing rooms of Austen — then ", and the". The model should continue with
/// a noun of the same world:
///
///     The waves, whales, sail, jaw, crew, oil, bow, sharks, tail, and the → " boats" (not " father")
///     The visit, daughter, estate, cousin, dance, carriage, letter, marriage, dancing, and the → " father" (not " boats")
///
/// The last tokens (", and the") are the same in every prompt, so the answer can only come from
/// the context words, moved to the last position by attention. Prompts come in pairs that share
/// an answer pair (S, L) and two context lists: line 2k is the sea list (answer S, wrong L),
/// line 2k+1 the drawing-room list (answer L, wrong S), and each is the other's `corrupt` — so
/// the corrupt prompt flips which answer is right, and the two answers' priors cancel over a pair.
/// Answers never occur in the context (the lists are disjoint), so the task is the topic, not
/// copying. Every word is one token after a space, so all prompts have the same length
/// (21 tokens; 22 with BOS). Extra key `sea`: 1 when the prompt is the sea list, 0 otherwise.
///
/// The words were chosen by measuring the embedded models (models/README.md, "Tasks"): context
/// words that move the answer most, answer pairs whose priors after ", and the" are balanced.
public struct TopicGenerator: Sendable {
    /// *Moby-Dick* context words.
    public static let seaContext = [
        "waves", "sharks", "rope", "sail", "shark", "cabin", "crew", "jaw", "bow", "fish", "sailors",
        "tail", "sperm", "ships", "oil", "deck", "whales",
    ]
    /// Austen context words.
    public static let landContext = [
        "cousin", "aunt", "dance", "fortune", "carriage", "neighbourhood", "dinner", "friends", "ball",
        "marriage", "daughter", "estate", "lady", "family", "visit", "letter", "party", "dancing", "ladies",
    ]
    /// Answers after a sea list (the wrong answer after a drawing-room list).
    public static let seaAnswers = ["water", "ocean", "boats"]
    /// Answers after a drawing-room list (the wrong answer after a sea list).
    public static let landAnswers = ["sister", "father", "brother", "mother"]
    /// Context words per prompt.
    public static let contextLength = 9

    public let seed: UInt64

    public init(seed: UInt64) { self.seed = seed }

    /// "The w1, w2, …, w9, and the".
    public static func prompt(_ words: [String]) -> String {
        "The " + words.joined(separator: ", ") + ", and the"
    }

    /// `n` prompts in pairs (the last pair cut if n is odd); a smaller n gives a prefix.
    public func generate(n: Int, tokenizer: some TextEncoder) throws -> [PromptRecord] {
        guard n > 0 else { throw AnalysisError.generationCountInvalid(n: n) }
        let k = Self.contextLength
        let sea = singleTokenWords(Self.seaContext, tokenizer: tokenizer)
        let land = singleTokenWords(Self.landContext, tokenizer: tokenizer)
        let seaAnswers = singleTokenWords(Self.seaAnswers, tokenizer: tokenizer)
        let landAnswers = singleTokenWords(Self.landAnswers, tokenizer: tokenizer)
        for (kind, words, needed) in [
            ("sea context words", sea, k), ("drawing-room context words", land, k),
            ("sea answers", seaAnswers, 1), ("drawing-room answers", landAnswers, 1),
        ] where words.count < needed {
            throw AnalysisError.tooFewSingleTokenWords(task: "topic", kind: kind, found: words.count, needed: needed)
        }

        var rng = SplitMix64(seed: seed)
        var records: [PromptRecord] = []
        records.reserveCapacity(n)
        while records.count < n {
            let seaAnswer = " " + rng.pick(seaAnswers)
            let landAnswer = " " + rng.pick(landAnswers)
            let seaPrompt = Self.prompt(Self.sample(sea, k, &rng))
            let landPrompt = Self.prompt(Self.sample(land, k, &rng))
            records.append(
                PromptRecord(prompt: seaPrompt, answer: seaAnswer, wrong: landAnswer, corrupt: landPrompt, extra: ["sea": 1]))
            if records.count < n {
                records.append(
                    PromptRecord(prompt: landPrompt, answer: landAnswer, wrong: seaAnswer, corrupt: seaPrompt, extra: ["sea": 0]))
            }
        }
        return records
    }

    /// `k` distinct words of `words` in random order (partial Fisher–Yates; k ≤ words.count).
    static func sample(_ words: [String], _ k: Int, _ rng: inout SplitMix64) -> [String] {
        var pool = words
        for i in 0..<k { pool.swapAt(i, i + rng.next(below: pool.count - i)) }
        return Array(pool[..<k])
    }
}
