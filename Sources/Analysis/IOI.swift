import Foundation
import Support

/// Indirect-object identification prompts in the style of Wang et al. 2022 ("Interpretability in
/// the Wild", arXiv 2211.00593): "Then, Mary and John went to the store. John gave a drink to"
/// → " Mary" (the indirect object, the name not repeated); wrong = " John" (the subject).
///
/// Layout and corruption follow prompts/paper_ioi.jsonl exactly. Prompts come in groups of four
/// that share names, place, object and template; with names A, B in the group:
///
///     A and B … A → answer B      A and B … B → answer A
///     B and A … A → answer B      B and A … B → answer A
///
/// so BABA and ABBA orders are balanced (two each per group). `corrupt` is the prompt with the
/// second occurrence of the subject replaced by the indirect object — which is the other prompt
/// of the adjacent pair (lines 2k and 2k+1 are each other's corruption). In the corrupt prompt the
/// repeated name is the clean answer, so the clean logit difference flips sign.
/// `set` is the line index / 16 (the paper file's batches of 16); `template` indexes `templates`.
public struct IOIGenerator: Sendable {
    /// `{A}` and `{B}` are the first two names in order, `{S}` the repeated subject. Every
    /// template ends just before the indirect object and puts each name after a space.
    public static let templates: [String] = [
        "Then, {A} and {B} went to the {PLACE}. {S} gave a {OBJECT} to",
        "Then, {A} and {B} had a lot of fun at the {PLACE}. {S} gave a {OBJECT} to",
        "Then, {A} and {B} were working at the {PLACE}. {S} decided to give a {OBJECT} to",
        "Then, {A} and {B} were thinking about going to the {PLACE}. {S} wanted to give a {OBJECT} to",
        "Then, {A} and {B} had a long argument, and afterwards {S} said to",
        "After {A} and {B} went to the {PLACE}, {S} gave a {OBJECT} to",
        "When {A} and {B} got a {OBJECT} at the {PLACE}, {S} decided to give it to",
        "When {A} and {B} got a {OBJECT} at the {PLACE}, {S} decided to give the {OBJECT} to",
        "While {A} and {B} were working at the {PLACE}, {S} gave a {OBJECT} to",
        "While {A} and {B} were commuting to the {PLACE}, {S} gave a {OBJECT} to",
        "After the lunch, {A} and {B} went to the {PLACE}. {S} gave a {OBJECT} to",
        "Afterwards, {A} and {B} went to the {PLACE}. {S} gave a {OBJECT} to",
        "Then, {A} and {B} had a long argument. Afterwards {S} said to",
        "The {PLACE} {A} and {B} went to had a {OBJECT}. {S} gave it to",
        "Friends {A} and {B} found a {OBJECT} at the {PLACE}. {S} gave it to",
    ]

    /// Common first names; only those that are one token with a leading space are used.
    public static let candidateNames = [
        "Mary", "John", "Jamie", "Erin", "Lisa", "Jeremy", "Sarah", "Michael", "Emily", "David",
        "Laura", "James", "Rachel", "Daniel", "Amy", "Paul", "Kelly", "Mark", "Nicole", "Ryan",
        "Rebecca", "Kevin", "Heather", "Eric", "Jennifer", "Adam", "Crystal", "Tyler", "Andrea", "Scott",
        "Angela", "Robert", "Michelle", "Thomas", "Katie", "Jason", "Elizabeth", "Samuel", "Ashley", "William",
    ]
    /// Places and objects of the paper's set plus a few more; consonant-initial objects so that
    /// "a {OBJECT}" reads right. Only single tokens (with leading space) are used.
    public static let candidatePlaces = [
        "store", "garden", "restaurant", "school", "hospital", "office", "house", "station",
        "park", "beach", "library", "museum",
    ]
    public static let candidateObjects = [
        "ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack",
        "book", "cake", "pencil", "letter",
    ]

    public let seed: UInt64

    public init(seed: UInt64) { self.seed = seed }

    /// `n` prompts (groups of four, the last one cut if n is not a multiple of 4). Template
    /// `g mod templates.count` for group g; names, place and object drawn from the seed.
    public func generate(n: Int, tokenizer: some TextEncoder) throws -> [PromptRecord] {
        guard n > 0 else { throw AnalysisError.generationCountInvalid(n: n) }
        let names = singleTokenWords(Self.candidateNames, tokenizer: tokenizer)
        let places = singleTokenWords(Self.candidatePlaces, tokenizer: tokenizer)
        let objects = singleTokenWords(Self.candidateObjects, tokenizer: tokenizer)
        guard names.count >= 2 else {
            throw AnalysisError.tooFewSingleTokenWords(task: "ioi", kind: "names", found: names.count, needed: 2)
        }
        guard !places.isEmpty else {
            throw AnalysisError.tooFewSingleTokenWords(task: "ioi", kind: "places", found: 0, needed: 1)
        }
        guard !objects.isEmpty else {
            throw AnalysisError.tooFewSingleTokenWords(task: "ioi", kind: "objects", found: 0, needed: 1)
        }

        var rng = SplitMix64(seed: seed)
        var records: [PromptRecord] = []
        records.reserveCapacity(n)
        var group = 0
        while records.count < n {
            let templateIndex = group % Self.templates.count
            let first = rng.next(below: names.count)
            var second = rng.next(below: names.count - 1)
            if second >= first { second += 1 }
            let (a, b) = (names[first], names[second])
            let place = rng.pick(places)
            let object = rng.pick(objects)
            func render(_ x: String, _ y: String, subject: String) -> String {
                Self.fill(Self.templates[templateIndex], a: x, b: y, s: subject, place: place, object: object)
            }
            for (x, y, subject) in [(a, b, a), (a, b, b), (b, a, a), (b, a, b)] where records.count < n {
                let indirectObject = subject == x ? y : x
                records.append(
                    PromptRecord(
                        prompt: render(x, y, subject: subject),
                        answer: " " + indirectObject,
                        wrong: " " + subject,
                        corrupt: render(x, y, subject: indirectObject),
                        extra: ["set": records.count / 16, "template": templateIndex]))
            }
            group += 1
        }
        return records
    }

    static func fill(_ template: String, a: String, b: String, s: String, place: String, object: String) -> String {
        template.replacingOccurrences(of: "{A}", with: a)
            .replacingOccurrences(of: "{B}", with: b)
            .replacingOccurrences(of: "{S}", with: s)
            .replacingOccurrences(of: "{PLACE}", with: place)
            .replacingOccurrences(of: "{OBJECT}", with: object)
    }

    /// The corruption rule of paper_ioi.jsonl: the last occurrence of the subject (`wrong`, a
    /// whole word) replaced by the indirect object (`answer`); both keep their leading space.
    /// Nil if the prompt does not contain the subject as a word.
    public static func corrupt(prompt: String, answer: String, wrong: String) -> String? {
        var searchEnd = prompt.endIndex
        while let range = prompt.range(of: wrong, options: .backwards, range: prompt.startIndex..<searchEnd) {
            let atWordEnd = range.upperBound == prompt.endIndex || !prompt[range.upperBound].isLetter
            if atWordEnd { return prompt.replacingCharacters(in: range, with: answer) }
            searchEnd = range.upperBound == range.lowerBound ? range.lowerBound : prompt.index(before: range.upperBound)
        }
        return nil
    }
}
