import Foundation
import Testing
import TensorCore
@testable import GPT2

/// Format-level tests of `SafetensorsFile` and `SafetensorsWriter`. The F16/BF16 bit patterns
/// below are IEEE 754 / bfloat16 format facts, not model values.
@Suite struct SafetensorsTests {
    @Test func writerRoundTripF32() throws {
        let dir = try CheckpointFixture.temporaryDirectory()
        defer { CheckpointFixture.remove(dir) }
        let url = dir.appendingPathComponent("t.safetensors")
        let tensors: [String: Tensor] = [
            "b": Tensor(shape: [2, 3], data: [1, -2, 3.5, .infinity, -0.0, 0x1p-140]),
            "a.scalar": Tensor(shape: [], data: [7]),
            "empty": Tensor(shape: [0, 3], data: []),
            "quote\"name": Tensor(shape: [1], data: [0.25]),
        ]
        try SafetensorsWriter.write(tensors, metadata: ["format": "np", "note": "x\ny"], to: url)
        let file = try SafetensorsFile(url: url)
        #expect(file.names == tensors.keys.sorted())
        #expect(file.metadata == ["format": "np", "note": "x\ny"])
        #expect(file.dataStart % 8 == 0)
        for (name, t) in tensors {
            let read = try file.tensor(name)
            #expect(read.shape == t.shape)
            #expect(read.data.map(\.bitPattern) == t.data.map(\.bitPattern), "\(name)")
            #expect(try file.entry(name).dtype == .f32)
        }
        // Keys are written sorted, metadata first, header padded with spaces.
        let bytes = try Data(contentsOf: url)
        let header = String(decoding: bytes[8..<file.dataStart], as: UTF8.self)
        #expect(header.hasPrefix("{\"__metadata__\""))
        let order = ["\"a.scalar\"", "\"b\"", "\"empty\"", "\"quote"].map { header.range(of: $0)!.lowerBound }
        #expect(order == order.sorted())
        #expect(header.hasSuffix("}") || header.hasSuffix(" "))
        let listing = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(!listing.contains { $0.contains(".tmp-") })
    }

    @Test func writerOverwritesAndRejectsBadTensors() throws {
        let dir = try CheckpointFixture.temporaryDirectory()
        defer { CheckpointFixture.remove(dir) }
        let url = dir.appendingPathComponent("t.safetensors")
        try SafetensorsWriter.write(["x": Tensor(shape: [1], data: [1])], to: url)
        try SafetensorsWriter.write(["y": Tensor(shape: [2], data: [2, 3])], to: url)
        #expect(try SafetensorsFile(url: url).names == ["y"])
        var bad = Tensor(shape: [2], data: [1, 2])
        bad.data.append(3)
        expectCheckpointError(["t.safetensors", "tensor z", "[2]", "3 values"]) {
            try SafetensorsWriter.write(["z": bad], to: url)
        }
        expectCheckpointError(["missing-dir"]) {
            try SafetensorsWriter.write(["x": Tensor(shape: [1], data: [1])],
                                        to: dir.appendingPathComponent("missing-dir/t.safetensors"))
        }
    }

    @Test func halfConversionKnownValues() {
        #expect(halfToFloat(0x3C00) == 1)
        #expect(halfToFloat(0xC000) == -2)
        #expect(halfToFloat(0x3555) == 0.333251953125)
        #expect(halfToFloat(0x7BFF) == 65504)  // largest normal
        #expect(halfToFloat(0x0400) == 0x1p-14)  // smallest normal
        #expect(halfToFloat(0x0001) == 0x1p-24)  // smallest subnormal
        #expect(halfToFloat(0x03FF) == 1023 * 0x1p-24)  // largest subnormal
        #expect(halfToFloat(0x8001) == -0x1p-24)
        #expect(halfToFloat(0x0000).bitPattern == 0)
        #expect(halfToFloat(0x8000).bitPattern == 0x8000_0000)  // negative zero keeps its sign
        #expect(halfToFloat(0x7C00) == .infinity)
        #expect(halfToFloat(0xFC00) == -.infinity)
        #expect(halfToFloat(0x7E00).isNaN)
        #expect(halfToFloat(0xFE01).isNaN)
    }

    #if !(os(macOS) && arch(x86_64))
    /// Every half bit pattern against the standard library's Float16 conversion.
    @Test func halfConversionMatchesFloat16Exhaustively() {
        for bits in UInt16.min...UInt16.max {
            let expected = Float(Float16(bitPattern: bits))
            let got = halfToFloat(bits)
            if expected.isNaN {
                #expect(got.isNaN)
            } else if got.bitPattern != expected.bitPattern {
                Issue.record("half 0x\(String(bits, radix: 16)): got \(got), expected \(expected)")
                return
            }
        }
    }
    #endif

    @Test func readsF16AndBF16() throws {
        let dir = try CheckpointFixture.temporaryDirectory()
        defer { CheckpointFixture.remove(dir) }
        let url = dir.appendingPathComponent("h.safetensors")
        let half: [UInt16] = [0x3C00, 0xC000, 0x8000, 0x0001, 0x03FF, 0x7C00, 0xFC00, 0x7E00]
        let brain: [UInt16] = [0x3F80, 0xC000, 0x8000, 0x0001, 0x4049, 0x7F80, 0xFF80, 0x7FC0]
        try CheckpointFixture.rawFile([
            .init(name: "half", dtype: "F16", shape: [2, 4], bytes: CheckpointFixture.littleEndianBytes(half)),
            .init(name: "brain", dtype: "BF16", shape: [8], bytes: CheckpointFixture.littleEndianBytes(brain)),
        ], headerPadding: 3).write(to: url)  // odd padding: tensor data is unaligned
        let file = try SafetensorsFile(url: url)
        #expect(file.entries["half"]?.dtype == .f16)
        #expect(file.entries["brain"]?.dtype == .bf16)

        let h = try file.tensor("half")
        #expect(h.shape == [2, 4])
        #expect(Array(h.data[0..<2]) == [1, -2])
        #expect(h.data[2].bitPattern == 0x8000_0000)
        #expect(h.data[3] == 0x1p-24)
        #expect(h.data[4] == 1023 * 0x1p-24)
        #expect(h.data[5] == .infinity && h.data[6] == -.infinity && h.data[7].isNaN)

        let b = try file.floats("brain")
        #expect(Array(b[0..<2]) == [1, -2])
        #expect(b[2].bitPattern == 0x8000_0000)
        #expect(b[3].bitPattern == 0x0001_0000)  // bf16 subnormal = top half of an f32 subnormal
        #expect(b[3] == 0x1p-133)
        #expect(b[4] == 3.140625)
        #expect(b[5] == .infinity && b[6] == -.infinity && b[7].isNaN)
    }

    @Test func readsMetadataEmptyTensorsAndUnconvertibleDTypes() throws {
        let dir = try CheckpointFixture.temporaryDirectory()
        defer { CheckpointFixture.remove(dir) }
        let url = dir.appendingPathComponent("mixed.safetensors")
        let one = CheckpointFixture.littleEndianBytes([Float(1).bitPattern])
        let two = CheckpointFixture.littleEndianBytes([Float(2).bitPattern])
        let data = one + [1, 0] + two
        let header = """
            {"__metadata__":{"format":"pt","n":3},"b":{"dtype":"F32","shape":[1],"data_offsets":[6,10]},\
            "a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"z":{"dtype":"F32","shape":[0],"data_offsets":[10,10]},\
            "w":{"dtype":"BOOL","shape":[2],"data_offsets":[4,6]}}
            """
        try CheckpointFixture.rawFile(header: header, data: data).write(to: url)
        let file = try SafetensorsFile(url: url)
        #expect(file.metadata == ["format": "pt"])
        #expect(try file.floats("a") == [1])
        #expect(try file.tensor("b").data == [2])
        #expect(try file.floats("z") == [])
        // A dtype the format knows but lnlens does not convert: valid file, unreadable tensor.
        expectCheckpointError(["mixed.safetensors", "tensor w", "BOOL", "F32, F16, BF16"]) { _ = try file.floats("w") }
        expectCheckpointError(["mixed.safetensors", "nope"]) { _ = try file.floats("nope") }
    }

    /// The tensors must cover the data section exactly: a gap, a late start, trailing bytes or a
    /// header length a few bytes off (the JSON then ends in padding and still parses) are errors,
    /// not tensors read from the wrong bytes.
    @Test func rejectsDataSectionNotCoveredExactly() throws {
        let eight = [UInt8](repeating: 0x3F, count: 8)
        try badFile(CheckpointFixture.rawFile(header: #"{"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: eight),
                    expect: ["bytes 0..<4", "belong to no tensor", "tensor t starts at 4"])
        try badFile(CheckpointFixture.rawFile(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[1],"data_offsets":[6,8]}}"#, data: eight),
                    expect: ["bytes 4..<6", "tensor b starts at 6"])
        try badFile(CheckpointFixture.rawFile(header: good, data: eight + [0, 0]),
                    expect: ["end at byte 8", "holds 10 bytes", "trailing bytes"])
        // A header padded with spaces (as writers align the data), its length lowered by 4 and by 1:
        // the JSON still parses, and without the check every tensor would be read early.
        let values = CheckpointFixture.littleEndianBytes([Float(1), 2, 3].map(\.bitPattern))
        var bytes = CheckpointFixture.rawFile([.init(name: "x", dtype: "F32", shape: [3], bytes: values)], headerPadding: 6)
        let dir = try CheckpointFixture.temporaryDirectory()
        defer { CheckpointFixture.remove(dir) }
        let url = dir.appendingPathComponent("ok.safetensors")
        try bytes.write(to: url)
        #expect(try SafetensorsFile(url: url).tensor("x").data == [1, 2, 3])
        let length = UInt64(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        for shift: UInt64 in [4, 1] {
            withUnsafeBytes(of: (length - shift).littleEndian) { bytes.replaceSubrange(0..<8, with: $0) }
            try badFile(bytes, expect: ["is not a valid safetensors file", "holds \(12 + shift) bytes"])
        }
    }

    // MARK: Bad files: each message names the file and, where there is one, the tensor.

    private func badFile(_ data: Data, named name: String = "bad.safetensors", expect fragments: [String]) throws {
        let dir = try CheckpointFixture.temporaryDirectory()
        defer { CheckpointFixture.remove(dir) }
        let url = dir.appendingPathComponent(name)
        try data.write(to: url)
        expectCheckpointError([url.path] + fragments) { _ = try SafetensorsFile(url: url) }
    }

    private let good = #"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#

    @Test func rejectsFileShorterThanEightBytes() throws {
        try badFile(Data([1, 0, 0]), expect: ["3 bytes", "shorter than the 8-byte header length"])
        try badFile(Data(), expect: ["0 bytes"])
    }

    @Test func rejectsHeaderLengthBeyondFile() throws {
        try badFile(CheckpointFixture.rawFile(header: good, data: [UInt8](repeating: 0, count: 8), headerLength: 1000),
                    expect: ["header length 1000", "beyond"])
        try badFile(CheckpointFixture.rawFile(header: "", data: [], headerLength: UInt64.max), expect: ["header length"])
    }

    @Test func rejectsTruncatedData() throws {
        try badFile(CheckpointFixture.rawFile(header: good, data: [0, 0, 0, 0]),
                    expect: ["tensor t", "data_offsets [0, 8]", "4-byte data section"])
    }

    @Test func rejectsHeaderThatIsNotJSONObject() throws {
        try badFile(CheckpointFixture.rawFile(header: "{\"t\": [", data: []), expect: ["not valid JSON"])
        try badFile(CheckpointFixture.rawFile(header: "[1, 2]", data: []), expect: ["not a JSON object"])
        try badFile(CheckpointFixture.rawFile(header: #"{"__metadata__": 3}"#, data: []), expect: ["__metadata__"])
    }

    @Test func rejectsEntryMissingFields() throws {
        let zeros = [UInt8](repeating: 0, count: 8)
        try badFile(CheckpointFixture.rawFile(header: #"{"t":{"shape":[2],"data_offsets":[0,8]}}"#, data: zeros),
                    expect: ["tensor t", "dtype"])
        try badFile(CheckpointFixture.rawFile(header: #"{"t":{"dtype":"F32","data_offsets":[0,8]}}"#, data: zeros),
                    expect: ["tensor t", "shape"])
        try badFile(CheckpointFixture.rawFile(header: #"{"t":{"dtype":"F32","shape":[2]}}"#, data: zeros),
                    expect: ["tensor t", "data_offsets"])
        try badFile(CheckpointFixture.rawFile(header: #"{"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, data: zeros),
                    expect: ["tensor t", "data_offsets"])
        try badFile(CheckpointFixture.rawFile(header: #"{"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, data: zeros),
                    expect: ["tensor t", "shape"])
        try badFile(CheckpointFixture.rawFile(header: #"{"t":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}"#, data: zeros),
                    expect: ["tensor t", "shape"])
        // Booleans are not sizes, though Foundation bridges true to 1.
        try badFile(CheckpointFixture.rawFile(header: #"{"t":{"dtype":"F32","shape":[true,2],"data_offsets":[0,8]}}"#, data: zeros),
                    expect: ["tensor t", "shape"])
        try badFile(CheckpointFixture.rawFile(header: #"{"t":{"dtype":"F32","shape":[2],"data_offsets":[false,8]}}"#, data: zeros),
                    expect: ["tensor t", "data_offsets"])
        try badFile(CheckpointFixture.rawFile(header: #"{"t":7}"#, data: zeros), expect: ["tensor t", "not a JSON object"])
    }

    @Test func rejectsUnknownDType() throws {
        try badFile(CheckpointFixture.rawFile(header: #"{"t":{"dtype":"Q4_K","shape":[2],"data_offsets":[0,8]}}"#,
                                              data: [UInt8](repeating: 0, count: 8)),
                    expect: ["tensor t", "Q4_K", "F32, F16, BF16"])
    }

    @Test func rejectsShapeTimesDTypeNotMatchingBytes() throws {
        try badFile(CheckpointFixture.rawFile(header: #"{"t":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}}"#,
                                              data: [UInt8](repeating: 0, count: 8)),
                    expect: ["tensor t", "[3]", "F16", "needs 6 bytes", "span 8"])
    }

    @Test func rejectsOverlappingOffsets() throws {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        try badFile(CheckpointFixture.rawFile(header: header, data: [UInt8](repeating: 0, count: 12)),
                    expect: ["tensors a and b", "overlapping"])
    }

    @Test func rejectsDirectoriesAndMissingFiles() throws {
        let dir = try CheckpointFixture.temporaryDirectory()
        defer { CheckpointFixture.remove(dir) }
        expectCheckpointError([dir.path, "not a regular file"]) { _ = try SafetensorsFile(url: dir) }
        let missing = dir.appendingPathComponent("none.safetensors")
        expectCheckpointError([missing.path]) { _ = try SafetensorsFile(url: missing) }
    }
}
