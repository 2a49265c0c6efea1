import Foundation
import Testing

@testable import Tokenizer

@Suite struct TokenizerBehaviourTests {
    /// bytes_to_unicode is a bijection onto 256 characters, identity on printable Latin-1.
    @Test func byteLevelMapIsReversible() {
        let map = ByteLevel.characterForByte
        #expect(Set(map).count == 256)
        for byte in 0..<256 {
            #expect(ByteLevel.byteForCharacter[map[byte].value] == UInt8(byte))
        }
        #expect(map[Int(UInt8(ascii: "a"))] == "a")
        #expect(ByteLevel.bytes(ofToken: ByteLevel.token(ofBytes: Array(" the\n".utf8))) == Array(" the\n".utf8))
    }

    /// decode(encode(s)) == s for random text over every plane, including the special token.
    @Test func roundTripRandomText() throws {
        let tokenizer = try Fixtures.tokenizer()
        var rng = SplitMix64(seed: 7)
        let pool: [ClosedRange<UInt32>] = [0x00...0x7F, 0x80...0x7FF, 0x800...0xD7FF, 0xE000...0xFFFD, 0x10000...0x10FFFF]
        for _ in 0..<300 {
            var scalars = String.UnicodeScalarView()
            for _ in 0..<Int(rng.next() % 40) {
                let range = pool[Int(rng.next() % UInt64(pool.count))]
                let value = range.lowerBound + UInt32(rng.next() % UInt64(range.count))
                if let scalar = Unicode.Scalar(value) { scalars.append(scalar) }
            }
            var text = String(scalars)
            if rng.next() % 5 == 0 { text += "<|endoftext|>" + text }
            let ids = tokenizer.encode(text)
            #expect(sameScalars(tokenizer.decode(ids), text), "\(text.debugDescription)")
            #expect(ids.allSatisfy { $0 >= 0 && $0 < tokenizer.vocabSize })
        }
    }

    /// The heap-based merge loop agrees with the naive reference on long pieces.
    @Test func heapMergesMatchNaiveMerges() throws {
        let tokenizer = try Fixtures.tokenizer()
        var rng = SplitMix64(seed: 11)
        let alphabets = [Array("abcdefghijklmnopqrstuvwxyz".utf8), Array("aab".utf8), Array("0123456789".utf8),
                         Array("é日😀".utf8), Array("!.-=".utf8)]
        for length in [2, 3, 5, 17, 49, 64, 200, 1000] {
            for alphabet in alphabets {
                let bytes = (0..<length).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] }
                let symbols = bytes.map { tokenizer.byteTokenIDs[Int($0)] }
                #expect(tokenizer.merges.applyWithHeap(symbols) == tokenizer.merges.applyNaive(symbols))
            }
        }
    }

    /// "<|endoftext|>" in the text is the special token and splits the text around it.
    @Test func specialTokenSplitsText() throws {
        let tokenizer = try Fixtures.tokenizer()
        let eot = tokenizer.endOfTextID
        let parts = ["Hello world.  ", "\n\nThe end"]
        let ids = tokenizer.encode(parts[0] + "<|endoftext|>" + parts[1])
        #expect(ids == tokenizer.encode(parts[0]) + [eot] + tokenizer.encode(parts[1]))
        #expect(tokenizer.encode("<|endoftext|><|endoftext|>") == [eot, eot])
        #expect(!tokenizer.encode("<|endoftext|").contains(eot))
    }

    /// Ids outside the vocabulary are skipped, never a crash.
    @Test func unknownIDsAreSkipped() throws {
        let tokenizer = try Fixtures.tokenizer()
        let c = try #require(Fixtures.encodeCases.first { $0.ids.count > 3 })
        #expect(sameScalars(tokenizer.decode([-1] + c.ids + [tokenizer.vocabSize, Int.max]), c.text))
        #expect(tokenizer.tokenString(-5) == "")
        #expect(tokenizer.tokenString(Int.max) == "")
    }

    /// Copies share one cache and can encode concurrently.
    @Test func concurrentEncodingAgrees() async throws {
        let tokenizer = try Fixtures.tokenizer()
        let cases = Fixtures.encodeCases
        let failures = await withTaskGroup(of: Int.self) { group in
            for part in 0..<4 {
                group.addTask {
                    cases.enumerated().filter { $0.offset % 4 == part }.filter { tokenizer.encode($0.element.text) != $0.element.ids }.count
                }
            }
            return await group.reduce(0, +)
        }
        #expect(failures == 0)
    }

    /// A few KB of prose encodes quickly (generous bound: debug build, shared machine).
    @Test func encodingProseIsFast() throws {
        let tokenizer = try GPT2Tokenizer.load(directory: Fixtures.modelTokenizerDirectory)  // fresh cache
        let prose = try #require(Fixtures.encodeCases.max { $0.text.utf8.count < $1.text.utf8.count })
        #expect(prose.text.utf8.count > 2000)
        let clock = ContinuousClock()
        let elapsed = clock.measure { _ = tokenizer.encode(prose.text) }
        #expect(elapsed < .seconds(1), "encoding \(prose.text.utf8.count) bytes took \(elapsed)")
    }
}

/// Deterministic generator so failures reproduce.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
