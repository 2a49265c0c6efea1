import Foundation
import Support
import Testing

/// SHA-256 against the example vectors of NIST FIPS 180-4 and hashlib, XXH64 against the
/// reference C implementation (python `xxhash`); vectors from scripts/reference/make_hash_vectors.py
/// in Tests/Fixtures/reference/hashing/.
@Suite struct HashingTests {
    struct Vectors: Decodable {
        let xxh64: [[Vector]]
        let sha256: [[Vector]]
        enum Vector: Decodable {
            case int(Int), text(String)
            init(from decoder: Decoder) throws {
                let c = try decoder.singleValueContainer()
                if let i = try? c.decode(Int.self) { self = .int(i) } else { self = .text(try c.decode(String.self)) }
            }
            var int: Int { if case let .int(i) = self { i } else { -1 } }
            var text: String { if case let .text(s) = self { s } else { "" } }
        }
    }

    static let vectors: Vectors = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/reference/hashing/vectors.json")
        return try! JSONDecoder().decode(Vectors.self, from: Data(contentsOf: url))
    }()

    /// The script's input: the first n bytes of `(i * 31 + 7) mod 251`.
    static func stream(_ n: Int) -> [UInt8] { (0..<n).map { UInt8(($0 * 31 + 7) % 251) } }

    /// FIPS 180-4's examples (NIST's SHA-256 example document): one block, two blocks, and one
    /// million 'a'; and the empty message.
    @Test func sha256MatchesNISTExamples() {
        #expect(SHA256.hex(Data("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(Data()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Data("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // From Python's hashlib (moved here from PromptSetTests).
        #expect(SHA256.hex(Data(repeating: UInt8(ascii: "a"), count: 1000)) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
        #expect(SHA256.hex(Data(repeating: UInt8(ascii: "a"), count: 1_000_000))
                == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    /// Every length from 0 to 300 bytes (each padding case around the 56- and 64-byte boundaries)
    /// and a few long inputs, as hashlib computes them.
    @Test func sha256MatchesHashlibAtEveryLength() {
        #expect(Self.vectors.sha256.count > 300)
        for v in Self.vectors.sha256 {
            let n = v[0].int
            #expect(SHA256.hex(Data(Self.stream(n))) == v[1].text, "length \(n)")
        }
    }

    /// XXH64 of every length from 0 to 300 bytes (each tail: 8-, 4- and 1-byte steps after the
    /// 32-byte stripes) and a few long inputs, with seed 0 and with a seed above 2^63.
    @Test func xxh64MatchesTheReferenceImplementation() {
        #expect(Self.vectors.xxh64.count > 600)
        for v in Self.vectors.xxh64 {
            let n = v[0].int, seed = UInt64(v[1].text)!
            let got = XXH64.hex(Self.stream(n).withUnsafeBytes { XXH64.hash($0, seed: seed) })
            #expect(got == v[2].text, "length \(n) seed \(seed)")
        }
    }

    /// Moved from GPT2Tests/CheckpointTests.
    @Test func xxh64MatchesReferenceVectors() {
        // XXH64 (seed 0) as computed by python `xxhash` (the reference C implementation).
        func h(_ s: String) -> String { XXH64.hex(Array(s.utf8).withUnsafeBytes { XXH64.hash($0, seed: 0) }) }
        #expect(h("") == "ef46db3751d8e999")
        #expect(h("a") == "d24ec4f1a98c6e5b")
        #expect(h("abc") == "44bc2cf5ad770999")
        // Long input (the 32-byte stripe loop): python `xxhash.xxh64(bytes(range(256)) * 3 + b"xyz")`.
        let long = [UInt8]((0..<768).map { UInt8($0 % 256) }) + Array("xyz".utf8)
        #expect(XXH64.hex(long.withUnsafeBytes { XXH64.hash($0, seed: 0) }) == "e921a1b45bd779f8")
    }

    /// Hex is zero-padded to the digest's width.
    @Test func hexKeepsLeadingZeros() {
        #expect(XXH64.hex(0xab) == "00000000000000ab")
    }
}
