import Foundation
import Support
import Testing
import Tokenizer

@testable import Analysis

extension PromptTestSupport {
    /// The repository root: the nearest folder above this file holding models/tokenizer.
    static let repositoryRoot: URL = {
        var dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while dir.path != "/" {
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("models/tokenizer/vocab.json").path) {
                return dir
            }
            dir = dir.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    }()

    static let gpt2Tokenizer: Result<GPT2Tokenizer, any Error> = Result {
        try GPT2Tokenizer.load(directory: PromptTestSupport.repositoryRoot.appendingPathComponent("models/tokenizer"))
    }

    /// Every line of `text` parsed as a JSON object.
    static func jsonObjects(_ text: String) throws -> [[String: Any]] {
        try text.split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }
}

@Suite struct SplitMix64Tests {
    /// Values from Vigna's reference algorithm run in Python: s += 0x9E3779B97F4A7C15;
    /// z = (s ^ s>>30)·0xBF58476D1CE4E5B9; z = (z ^ z>>27)·0x94D049BB133111EB; z ^ z>>31 (mod 2^64).
    @Test func matchesReferenceSequence() {
        var rng = SplitMix64(seed: 0)
        #expect([rng.next(), rng.next(), rng.next()] == [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F])
        var rng42 = SplitMix64(seed: 42)
        #expect([rng42.next(), rng42.next()] == [0xBDD7_3226_2FEB_6E95, 0x28EF_E333_B266_F103])
    }

    @Test func belowStaysInRangeAndCoversIt() {
        var rng = SplitMix64(seed: 7)
        var seen = Set<Int>()
        for _ in 0..<2000 {
            let x = rng.next(below: 13)
            #expect((0..<13).contains(x))
            seen.insert(x)
        }
        #expect(seen.count == 13)
        #expect(rng.next(below: 1) == 0)
    }
}

@Suite struct PaperIOITests {
    let paper = PromptTestSupport.repositoryRoot.appendingPathComponent("prompts/paper_ioi.jsonl")

    /// The paper file's corruption rule, checked on all 480 lines: `corrupt` is `prompt` with the
    /// last occurrence of the subject (`wrong`) replaced by the indirect object (`answer`), the
    /// only change; and lines 2k, 2k+1 are each other's corruption.
    @Test func corruptRuleHoldsForEveryPaperLine() throws {
        let lines = try PromptTestSupport.jsonObjects(String(contentsOf: paper, encoding: .utf8))
        #expect(lines.count == 480)
        for (i, line) in lines.enumerated() {
            let prompt = try #require(line["prompt"] as? String)
            let answer = try #require(line["answer"] as? String)
            let wrong = try #require(line["wrong"] as? String)
            let corrupt = try #require(line["corrupt"] as? String)
            #expect(IOIGenerator.corrupt(prompt: prompt, answer: answer, wrong: wrong) == corrupt, "line \(i + 1)")
            #expect(corrupt == lines[i ^ 1]["prompt"] as? String, "line \(i + 1)")
            // The subject is the name said twice, the answer the name said once.
            let words = prompt.split(separator: " ").map { String($0).trimmingCharacters(in: .punctuationCharacters) }
            #expect(words.filter { " " + $0 == wrong }.count == 2, "line \(i + 1)")
            #expect(words.filter { " " + $0 == answer }.count == 1, "line \(i + 1)")
        }
    }

    /// Rendering the paper's records with our JSONL writer reproduces the file byte for byte.
    @Test func jsonlWriterReproducesPaperFileBytes() throws {
        let text = try String(contentsOf: paper, encoding: .utf8)
        let records = try PromptTestSupport.jsonObjects(text).map { o in
            PromptRecord(
                prompt: o["prompt"] as! String, answer: o["answer"] as! String, wrong: o["wrong"] as? String,
                corrupt: o["corrupt"] as? String, extra: ["set": (o["set"] as! NSNumber).intValue])
        }
        #expect(renderJSONL(records) == text)
    }

    @Test func paperFileIsValidUnderTheTokenizer() throws {
        let tokenizer = try PromptTestSupport.gpt2Tokenizer.get()
        let set = try PromptSet.load(url: paper, tokenizer: tokenizer, skipInvalid: false)
        #expect(set.examples.count == 480)
        #expect(set.contentHash == "746000272e63786395218ddfb5ab16025a84adcab9811992a054e1e2bbb70ca6")  // sha256sum
    }

    @Test func jsonEscapingFollowsPython() {
        // json.dumps('a"b\\c\n\té\u{1F600}\x7f') in Python
        #expect(JSONText.literal("a\"b\\c\n\té\u{1F600}\u{7F}") == #""a\"b\\c\n\t\u00e9\ud83d\ude00\u007f""#)
    }
}

@Suite struct IOIGeneratorTests {
    @Test func sameSeedSameBytesOtherSeedOtherBytes() throws {
        let tokenizer = try PromptTestSupport.gpt2Tokenizer.get()
        let a = renderJSONL(try IOIGenerator(seed: 0).generate(n: 60, tokenizer: tokenizer))
        let b = renderJSONL(try IOIGenerator(seed: 0).generate(n: 60, tokenizer: tokenizer))
        let c = renderJSONL(try IOIGenerator(seed: 1).generate(n: 60, tokenizer: tokenizer))
        #expect(a == b)
        #expect(a != c)
        // A shorter run is a prefix of a longer one.
        #expect(a.hasPrefix(renderJSONL(try IOIGenerator(seed: 0).generate(n: 10, tokenizer: tokenizer))))
    }

    @Test func everyGeneratedLineIsValidAndFollowsThePaperConvention() throws {
        let tokenizer = try PromptTestSupport.gpt2Tokenizer.get()
        let records = try IOIGenerator(seed: 3).generate(n: 203, tokenizer: tokenizer)
        #expect(records.count == 203)
        let url = try PromptTestSupport.temporaryFile(renderJSONL(records))
        let set = try PromptSet.load(url: url, tokenizer: tokenizer, skipInvalid: false)
        #expect(set.examples.count == 203)
        var templatesSeen = Set<Int>()
        var abba = 0
        for (i, r) in records.enumerated() {
            #expect(tokenizer.encode(r.answer).count == 1 && tokenizer.encode(r.wrong!).count == 1)
            #expect(r.answer != r.wrong)
            #expect(IOIGenerator.corrupt(prompt: r.prompt, answer: r.answer, wrong: r.wrong!) == r.corrupt)
            if i ^ 1 < records.count { #expect(r.corrupt == records[i ^ 1].prompt) }
            #expect(r.extra["set"] == i / 16)
            templatesSeen.insert(r.extra["template"]!)
            // ABBA: the indirect object is named first.
            let firstAnswer = r.prompt.range(of: r.answer)!.lowerBound
            let firstWrong = r.prompt.range(of: r.wrong!)!.lowerBound
            if firstAnswer < firstWrong { abba += 1 }
        }
        #expect(templatesSeen.count == IOIGenerator.templates.count)
        #expect(abs(2 * abba - 203) <= 1)
    }

    @Test func usesOnlySingleTokenWords() throws {
        let tokenizer = try PromptTestSupport.gpt2Tokenizer.get()
        let names = singleTokenWords(IOIGenerator.candidateNames, tokenizer: tokenizer)
        #expect(names.count >= 30)
        #expect(IOIGenerator.templates.count >= 8)
        #expect(singleTokenWords(["Mariana"], tokenizer: tokenizer).isEmpty)
    }

    /// prompts/README.md's commands regenerate the committed files byte for byte.
    @Test(arguments: PromptTask.allCases)
    func committedFilesAreReproducible(task: PromptTask) throws {
        let tokenizer = try PromptTestSupport.gpt2Tokenizer.get()
        let committed = try String(
            contentsOf: PromptTestSupport.repositoryRoot.appendingPathComponent("prompts/\(task.rawValue).jsonl"), encoding: .utf8)
        #expect(renderJSONL(try task.generate(n: 200, seed: 0, tokenizer: tokenizer)) == committed)
    }

    @Test func rejectsNonPositiveCount() throws {
        let tokenizer = try PromptTestSupport.gpt2Tokenizer.get()
        #expect(throws: AnalysisError.generationCountInvalid(n: 0)) {
            try IOIGenerator(seed: 0).generate(n: 0, tokenizer: tokenizer)
        }
    }
}

@Suite struct GreaterThanTests {
    @Test func generatedLinesAreValidAndHonest() throws {
        let tokenizer = try PromptTestSupport.gpt2Tokenizer.get()
        let records = try GreaterThanGenerator(seed: 5).generate(n: 150, tokenizer: tokenizer)
        let set = try PromptSet.load(url: try PromptTestSupport.temporaryFile(renderJSONL(records)), tokenizer: tokenizer, skipInvalid: false)
        #expect(set.examples.count == 150)
        for r in records {
            let year = r.extra["year"]!
            let (century, yy) = (year / 100, year % 100)
            #expect((11...17).contains(century) && (2...98).contains(yy))
            #expect(r.prompt.hasSuffix("to the year \(century)"))
            #expect(r.prompt.contains("from the year \(year) "))
            #expect(Int(r.answer)! > yy && Int(r.wrong!)! < yy)
            #expect(r.answer.count == 2 && r.wrong!.count == 2)
            #expect(r.corrupt == r.prompt.replacingOccurrences(of: "year \(year)", with: "year \(century)01"))
            // The start year is split as [" XX", "YY"].
            #expect(tokenizer.encode(" \(year)") == tokenizer.encode(" \(century)") + tokenizer.encode(GreaterThanGenerator.twoDigits(yy)))
        }
        #expect(renderJSONL(records) == renderJSONL(try GreaterThanGenerator(seed: 5).generate(n: 150, tokenizer: tokenizer)))
        #expect(renderJSONL(records) != renderJSONL(try GreaterThanGenerator(seed: 6).generate(n: 150, tokenizer: tokenizer)))
    }
}
