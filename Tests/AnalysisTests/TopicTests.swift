import Foundation
import Support
import Testing
import Tokenizer

@testable import Analysis

/// One token per character: no word of any list is a single token under it.
private struct CharacterEncoder: TextEncoder {
    let endOfTextID = 50256
    func encode(_ text: String) -> [Int] { text.unicodeScalars.map { Int($0.value) } }
}

@Suite struct TopicGeneratorTests {
    @Test func sameSeedSameBytesOtherSeedOtherBytesAndPrefixes() throws {
        let tokenizer = try PromptTestSupport.gpt2Tokenizer.get()
        let a = renderJSONL(try TopicGenerator(seed: 0).generate(n: 61, tokenizer: tokenizer))
        let b = renderJSONL(try TopicGenerator(seed: 0).generate(n: 61, tokenizer: tokenizer))
        let c = renderJSONL(try TopicGenerator(seed: 1).generate(n: 61, tokenizer: tokenizer))
        #expect(a == b)
        #expect(a != c)
        // A shorter run (odd: the last pair cut) is a prefix of a longer one.
        #expect(a.hasPrefix(renderJSONL(try TopicGenerator(seed: 0).generate(n: 7, tokenizer: tokenizer))))
        #expect(try TopicGenerator(seed: 0).generate(n: 7, tokenizer: tokenizer).count == 7)
    }

    @Test func everyLineIsValidPairedAndOnTopic() throws {
        let tokenizer = try PromptTestSupport.gpt2Tokenizer.get()
        let records = try TopicGenerator(seed: 4).generate(n: 201, tokenizer: tokenizer)
        #expect(records.count == 201)
        let set = try PromptSet.load(url: try PromptTestSupport.temporaryFile(renderJSONL(records)), tokenizer: tokenizer, skipInvalid: false)
        #expect(set.examples.count == 201)
        #expect(set.skipped.isEmpty)
        // One length for every prompt and every corrupt prompt: "The" + 9 words + 8 commas + ", and the".
        #expect(Set(set.examples.map(\.tokens.count)) == [21])
        #expect(Set(set.examples.compactMap { $0.corruptTokens?.count }) == [21])
        for example in set.examples {
            #expect(example.answerID != example.wrongID)
            #expect(example.tokens.suffix(3) == tokenizer.encode(", and the"))
        }
        var seaLines = 0
        for (i, r) in records.enumerated() {
            let isSea = r.extra["sea"] == 1
            #expect(isSea == (i % 2 == 0))
            if isSea { seaLines += 1 }
            // Lines 2k and 2k+1 are each other's corruption, with answer and wrong swapped.
            if i ^ 1 < records.count {
                let other = records[i ^ 1]
                #expect(r.corrupt == other.prompt && other.corrupt == r.prompt)
                #expect(r.answer == other.wrong && r.wrong == other.answer)
            }
            // The context: nine distinct words of the prompt's world; the answers are of the
            // right worlds and never in the context.
            #expect(r.prompt.hasPrefix("The ") && r.prompt.hasSuffix(", and the"))
            let words = r.prompt.dropFirst(4).dropLast(9).components(separatedBy: ", ")
            #expect(words.count == TopicGenerator.contextLength && Set(words).count == words.count)
            let answer = String(r.answer.dropFirst()), wrong = String(r.wrong!.dropFirst())
            #expect(r.answer.hasPrefix(" ") && r.wrong!.hasPrefix(" "))
            if isSea {
                #expect(words.allSatisfy(TopicGenerator.seaContext.contains))
                #expect(TopicGenerator.seaAnswers.contains(answer) && TopicGenerator.landAnswers.contains(wrong))
            } else {
                #expect(words.allSatisfy(TopicGenerator.landContext.contains))
                #expect(TopicGenerator.landAnswers.contains(answer) && TopicGenerator.seaAnswers.contains(wrong))
            }
            #expect(!words.contains(answer) && !words.contains(wrong))
        }
        #expect(seaLines == 101)
    }

    /// Every listed word is one GPT-2 token after a space (none is silently dropped), and the
    /// four lists are disjoint.
    @Test func listsAreSingleTokensAndDisjoint() throws {
        let tokenizer = try PromptTestSupport.gpt2Tokenizer.get()
        let lists = [TopicGenerator.seaContext, TopicGenerator.landContext, TopicGenerator.seaAnswers, TopicGenerator.landAnswers]
        for list in lists {
            #expect(singleTokenWords(list, tokenizer: tokenizer) == list)
            #expect(Set(list).count == list.count)
        }
        #expect(Set(lists.joined()).count == lists.map(\.count).reduce(0, +))
        #expect(TopicGenerator.seaContext.count >= TopicGenerator.contextLength)
        #expect(TopicGenerator.landContext.count >= TopicGenerator.contextLength)
    }

    @Test func refusesATokenizerWithoutTheWordsAndANonPositiveCount() throws {
        #expect(throws: AnalysisError.tooFewSingleTokenWords(task: "topic", kind: "sea context words", found: 0, needed: 9)) {
            try TopicGenerator(seed: 0).generate(n: 10, tokenizer: CharacterEncoder())
        }
        #expect(throws: AnalysisError.generationCountInvalid(n: -2)) {
            try TopicGenerator(seed: 0).generate(n: -2, tokenizer: CharacterEncoder())
        }
    }
}
