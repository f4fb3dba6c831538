import Foundation
import XCTest
import Tensors
import TestSupport
@testable import Formats

/// Builds small GGUF v3 files byte by byte, so tests control every field (and can corrupt them).
struct GGUFBuilder {
    private(set) var metadata: [UInt8] = []
    private(set) var kvCount = 0
    var tensors: [(name: String, dims: [Int], type: UInt32, data: [UInt8])] = []
    var alignment = 32

    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
    static func string(_ s: String) -> [UInt8] { le(UInt64(s.utf8.count)) + Array(s.utf8) }

    /// Appends a key with a value already encoded as (GGUF value kind, bytes).
    mutating func add(_ key: String, kind: UInt32, _ bytes: [UInt8]) {
        metadata += Self.string(key) + Self.le(kind) + bytes
        kvCount += 1
    }
    mutating func add(_ key: String, _ s: String) { add(key, kind: 8, Self.string(s)) }
    mutating func add(_ key: String, u32 v: UInt32) { add(key, kind: 4, Self.le(v)) }

    /// `dims` fastest-first, as GGUF stores them.
    mutating func tensor(_ name: String, dims: [Int], type: UInt32, data: [UInt8]) {
        tensors.append((name, dims, type, data))
    }

    func build() -> Data {
        var out = Array("GGUF".utf8) + Self.le(UInt32(3)) + Self.le(UInt64(tensors.count)) + Self.le(UInt64(kvCount))
        out += metadata
        let aligned = { (n: Int) in (n + alignment - 1) / alignment * alignment }
        var offset = 0
        for t in tensors {
            out += Self.string(t.name) + Self.le(UInt32(t.dims.count))
            for d in t.dims { out += Self.le(UInt64(d)) }
            out += Self.le(t.type) + Self.le(UInt64(offset))
            offset = aligned(offset + t.data.count)
        }
        // The data section starts aligned and each tensor is padded to the next aligned offset.
        for t in tensors {
            out += [UInt8](repeating: 0, count: aligned(out.count) - out.count)
            out += t.data
        }
        return Data(out)
    }
}

/// Writes `data` to a fresh temporary file, removed at the end of the test.
func scratchFile(_ test: XCTestCase, _ data: Data, name: String = "model.gguf") throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-formats-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
    let url = dir.appendingPathComponent(name)
    try data.write(to: url)
    return url
}

/// Asserts that `body` throws a FormatError whose text contains every one of `fragments`.
func expectFormatError<T>(_ body: @autoclosure () throws -> T, contains fragments: [String],
                          file: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try body()
        XCTFail("expected a FormatError containing \(fragments)", file: file, line: line)
    } catch let error as FormatError {
        for f in fragments {
            XCTAssertTrue(error.description.contains(f), "\"\(error)\" does not contain \"\(f)\"", file: file, line: line)
        }
        XCTAssertFalse(error.description.contains("\n"), "error should be one line: \(error)", file: file, line: line)
    } catch {
        XCTFail("expected a FormatError, got \(error)", file: file, line: line)
    }
}

final class GGUFTests: XCTestCase {
    func realFile() throws -> GGUFFile {
        try GGUFFile(url: TestPaths.require(TestPaths.smolLM2GGUF))
    }

    // MARK: the real SmolLM2 file

    func testRealFileMetadata() throws {
        let f = try realFile()
        XCTAssertEqual(f.version, 3)
        XCTAssertEqual(f.string("general.architecture"), "llama")
        XCTAssertEqual(f.int("llama.block_count"), 30)
        XCTAssertEqual(f.int("llama.embedding_length"), 576)
        XCTAssertEqual(f.int("llama.feed_forward_length"), 1536)
        XCTAssertEqual(f.int("llama.attention.head_count"), 9)
        XCTAssertEqual(f.int("llama.attention.head_count_kv"), 3)
        XCTAssertEqual(f.double("llama.rope.freq_base"), 100_000)
        XCTAssertEqual(f.double("llama.attention.layer_norm_rms_epsilon")!, 1e-5, accuracy: 1e-9)
        XCTAssertEqual(f.metadata["tokenizer.ggml.tokens"]?.array?.count, 49152)
        XCTAssertEqual(f.metadata["tokenizer.ggml.tokens"]?.array?.first?.string, "<|endoftext|>")
        XCTAssertEqual(f.metadataKeys.count, f.metadata.count)
        XCTAssertEqual(f.alignment, 32)
        XCTAssertEqual(f.dataOffset % 32, 0)
    }

    func testRealFileTensorDirectory() throws {
        let f = try realFile()
        // Tied Llama: embedding + final norm + 9 tensors in each of 30 blocks.
        XCTAssertEqual(f.tensorNames.count, 2 + 30 * 9)
        XCTAssertEqual(f.tensors.count, f.tensorNames.count)
        XCTAssertNil(f.tensors["output.weight"])
        let embed = try f.info("token_embd.weight")
        XCTAssertEqual(embed.shape, [49152, 576])
        XCTAssertEqual(embed.type, .q8_0)
        XCTAssertEqual(try f.info("blk.0.attn_k.weight").shape, [192, 576])
        XCTAssertEqual(try f.info("blk.0.attn_k.weight").type, .q4_1)
        XCTAssertEqual(try f.info("blk.29.ffn_down.weight").shape, [576, 1536])
        XCTAssertEqual(try f.info("blk.29.ffn_down.weight").type, .q4_1)
        XCTAssertEqual(try f.info("output_norm.weight").shape, [576])
        XCTAssertEqual(try f.info("output_norm.weight").type, .f32)
        expectFormatError(try f.tensor("nope.weight"), contains: [f.path, "nope.weight"])
    }

    /// Decodes block `b` of a Q8_0 or Q4_1 tensor by hand, straight from the spec.
    func handDecode(_ raw: UnsafeRawBufferPointer, type: GGMLType, block b: Int) -> [Float] {
        func half(_ at: Int) -> Float { Float(Float16(bitPattern: UInt16(raw[at]) | UInt16(raw[at + 1]) << 8)) }
        if type == .q8_0 {
            let base = b * 34
            return (0..<32).map { half(base) * Float(Int8(bitPattern: raw[base + 2 + $0])) }
        }
        let base = b * 20
        let d = half(base), m = half(base + 2)
        return (0..<32).map { i in
            let byte = raw[base + 4 + i % 16]
            return d * Float(i < 16 ? byte & 15 : byte >> 4) + m
        }
    }

    func checkAgainstHandDecode(_ name: String, type: GGMLType) throws {
        let f = try realFile()
        XCTAssertEqual(try f.info(name).type, type)
        let t = try f.tensor(name)
        let blocks = t.count / 32
        try f.withRawBytes(name) { raw in
            for b in [0, 1, blocks / 2 + 7, blocks - 1] {
                XCTAssertEqual(Array(t.buffer[b * 32 ..< b * 32 + 32]), handDecode(raw, type: type, block: b), "block \(b)")
            }
        }
        XCTAssertTrue(t.buffer.contains { $0 != 0 })
    }

    func testQ8_0MatchesHandDecode() throws { try checkAgainstHandDecode("token_embd.weight", type: .q8_0) }
    func testQ4_1MatchesHandDecode() throws { try checkAgainstHandDecode("blk.3.attn_q.weight", type: .q4_1) }

    func testF32NormReadsAsStored() throws {
        let f = try realFile()
        let t = try f.tensor("blk.0.attn_norm.weight")
        try f.withRawBytes("blk.0.attn_norm.weight") { raw in
            XCTAssertEqual(raw.count, 576 * 4)
            XCTAssertEqual(t[5], raw.loadUnaligned(fromByteOffset: 20, as: Float.self))
        }
    }

    func testDequantisesWholeModelQuickly() throws {
        let f = try realFile()
        let start = Date()
        var total = 0
        for name in f.tensorNames { total += try f.tensor(name).count }
        let seconds = Date().timeIntervalSince(start)
        XCTAssertEqual(total, 134_515_008)
        print("dequantised \(total) values in \(String(format: "%.3f", seconds)) s")
    }

    // MARK: damaged files

    func testTruncatedFilesFailWithPath() throws {
        let f = try realFile()
        let bytes = try Data(contentsOf: TestPaths.smolLM2GGUF)
        let embed = try f.info("token_embd.weight")
        let dataEnd = f.tensors.values.map { f.dataOffset + $0.offset + $0.byteCount! }.max()!
        // Cuts in the header, the metadata (early, and inside the token list), the tensor
        // infos, the first tensor's data, and one byte short of the last tensor's end.
        let cuts = [12, 1000, 1 << 20, f.dataOffset - 100, f.dataOffset + embed.offset + 1000, dataEnd - 1]
        for n in cuts {
            let url = try scratchFile(self, bytes.prefix(n))
            expectFormatError(try GGUFFile(url: url), contains: [url.path, "truncated"])
        }
    }

    func testBadMagicAndVersion() throws {
        var data = GGUFBuilder().build()
        data[0] = UInt8(ascii: "X")
        expectFormatError(try GGUFFile(url: try scratchFile(self, data)), contains: ["not a GGUF file"])
        data = GGUFBuilder().build()
        data[4] = 1
        expectFormatError(try GGUFFile(url: try scratchFile(self, data)), contains: ["version 1"])
        expectFormatError(try GGUFFile(url: try scratchFile(self, Data())), contains: ["empty"])
    }

    func testAbsurdCountsAndLengths() throws {
        // Tensor count field (bytes 8..<16) set to 2^60.
        var data = GGUFBuilder().build()
        data.replaceSubrange(8..<16, with: GGUFBuilder.le(UInt64(1) << 60))
        expectFormatError(try GGUFFile(url: try scratchFile(self, data)), contains: ["tensor count"])

        // A string whose length prefix claims far more bytes than exist.
        var b = GGUFBuilder()
        b.add("general.name", kind: 8, GGUFBuilder.le(UInt64.max) + Array("x".utf8))
        expectFormatError(try GGUFFile(url: try scratchFile(self, b.build())), contains: ["general.name"])

        // An array of a billion uint64s.
        b = GGUFBuilder()
        b.add("big", kind: 9, GGUFBuilder.le(UInt32(10)) + GGUFBuilder.le(UInt64(1) << 30))
        expectFormatError(try GGUFFile(url: try scratchFile(self, b.build())), contains: ["big"])

        // A tensor whose data lies past the end of the file.
        b = GGUFBuilder()
        b.tensor("w", dims: [8, 4], type: 0, data: [UInt8](repeating: 0, count: 64))
        let short = b.build().dropLast(64)
        expectFormatError(try GGUFFile(url: try scratchFile(self, Data(short))), contains: ["truncated", "tensor w"])

        // Five dimensions.
        b = GGUFBuilder()
        b.tensor("w5", dims: [1, 1, 1, 1, 1], type: 0, data: [0, 0, 0, 0])
        expectFormatError(try GGUFFile(url: try scratchFile(self, b.build())), contains: ["w5", "dimensions"])
    }

    // MARK: synthetic files

    func testEveryMetadataKind() throws {
        var b = GGUFBuilder()
        typealias B = GGUFBuilder
        b.add("u8", kind: 0, [200])
        b.add("i8", kind: 1, [0xFF])
        b.add("u16", kind: 2, B.le(UInt16(60000)))
        b.add("i16", kind: 3, B.le(Int16(-300)))
        b.add("u32", u32: 4_000_000_000)
        b.add("i32", kind: 5, B.le(Int32(-70000)))
        b.add("f32", kind: 6, B.le(Float(1.5).bitPattern))
        b.add("bool", kind: 7, [1])
        b.add("str", "héllo")
        b.add("u64", kind: 10, B.le(UInt64.max))
        b.add("i64", kind: 11, B.le(Int64.min))
        b.add("f64", kind: 12, B.le(Double(-0.25).bitPattern))
        b.add("ints", kind: 9, B.le(UInt32(5)) + B.le(UInt64(2)) + B.le(Int32(7)) + B.le(Int32(-8)))
        // An array of two arrays of strings.
        let inner = { (s: [String]) in B.le(UInt32(8)) + B.le(UInt64(s.count)) + s.flatMap(B.string) }
        b.add("nested", kind: 9, B.le(UInt32(9)) + B.le(UInt64(2)) + inner(["a", "bc"]) + inner([]))
        let f = try GGUFFile(url: try scratchFile(self, b.build()))
        XCTAssertEqual(f.metadata["u8"], .uint8(200))
        XCTAssertEqual(f.metadata["i8"], .int8(-1))
        XCTAssertEqual(f.metadata["u16"], .uint16(60000))
        XCTAssertEqual(f.metadata["i16"], .int16(-300))
        XCTAssertEqual(f.metadata["u32"], .uint32(4_000_000_000))
        XCTAssertEqual(f.metadata["i32"], .int32(-70000))
        XCTAssertEqual(f.metadata["f32"], .float32(1.5))
        XCTAssertEqual(f.metadata["bool"], .bool(true))
        XCTAssertEqual(f.metadata["str"], .string("héllo"))
        XCTAssertEqual(f.metadata["u64"], .uint64(.max))
        XCTAssertEqual(f.metadata["i64"], .int64(.min))
        XCTAssertEqual(f.metadata["f64"], .float64(-0.25))
        XCTAssertEqual(f.metadata["ints"], .array([.int32(7), .int32(-8)]))
        XCTAssertEqual(f.metadata["nested"], .array([.array([.string("a"), .string("bc")]), .array([])]))
        XCTAssertEqual(f.metadataKeys.first, "u8")
        XCTAssertTrue(f.tensors.isEmpty)
    }

    func testUnsupportedTypeIsNamed() throws {
        var b = GGUFBuilder()
        // IQ2_XXS (id 16): its codes index a lattice table this code does not carry.
        b.tensor("blk.0.ffn_up.weight", dims: [256, 2], type: 16, data: [UInt8](repeating: 0, count: 2 * 66))
        let f = try GGUFFile(url: try scratchFile(self, b.build()))
        XCTAssertEqual(try f.info("blk.0.ffn_up.weight").shape, [2, 256])
        expectFormatError(try f.tensor("blk.0.ffn_up.weight"), contains: ["IQ2_XXS", "blk.0.ffn_up.weight", f.path, "Q6_K"])
    }

    func testF16BF16Q4_0RoundTrip() throws {
        let values: [Float] = (0..<64).map { Float($0 - 32) * 0.125 }
        let f16 = values.flatMap { GGUFBuilder.le(Half.fp16Bits($0)) }
        let bf16 = values.flatMap { GGUFBuilder.le(Half.bf16Bits($0)) }
        // Q4_0: two blocks, scale 0.5, codes q → 0.5·(q − 8).
        var q4: [UInt8] = []
        var q4Expected: [Float] = []
        for block in 0..<2 {
            q4 += GGUFBuilder.le(Half.fp16Bits(0.5))
            let codes = (0..<32).map { UInt8(($0 + block * 3) % 16) }
            q4 += (0..<16).map { codes[$0] | codes[$0 + 16] << 4 }
            q4Expected += codes.map { 0.5 * (Float($0) - 8) }
        }
        var b = GGUFBuilder()
        b.tensor("h", dims: [16, 4], type: GGMLType.f16.rawValue, data: f16)
        b.tensor("b", dims: [64], type: GGMLType.bf16.rawValue, data: bf16)
        b.tensor("q", dims: [32, 2], type: GGMLType.q4_0.rawValue, data: q4)
        let f = try GGUFFile(url: try scratchFile(self, b.build()))
        XCTAssertEqual(try f.tensor("h").shape, [4, 16])
        XCTAssertEqual(try f.tensor("h").array, values)
        XCTAssertEqual(try f.tensor("b").array, values)
        XCTAssertEqual(try f.tensor("q").array, q4Expected)
    }
}
