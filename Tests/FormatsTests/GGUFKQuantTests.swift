import Foundation
import XCTest
import Tensors
import TestSupport
@testable import Formats

/// The K-quant, 5-bit and IQ4_NL decoders against gguf-py's reference dequantizer, on random
/// blocks and on blocks llama.cpp's quantizer wrote (Tests/Fixtures/gguf-kquants.gguf, made by
/// scripts/reference-gguf-kquants.py).
final class GGUFKQuantTests: XCTestCase {
    static let types: [GGMLType] = [.q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q5_0, .q5_1, .iq4_nl]

    func fixture() throws -> GGUFFile {
        try GGUFFile(url: TestPaths.require(TestPaths.fixture("gguf-kquants.gguf")))
    }

    /// Distance in representable fp32 values (0 = identical bits, ±0 counted equal).
    func ulps(_ a: Float, _ b: Float) -> UInt32 {
        func ordered(_ x: Float) -> Int64 {
            let bits = Int64(x.bitPattern & 0x7FFF_FFFF)
            return x.sign == .minus ? -bits : bits
        }
        return UInt32(clamping: abs(ordered(a) - ordered(b)))
    }

    func checkGroup(_ group: String) throws {
        let f = try fixture()
        for type in Self.types {
            let name = "\(group).\(type.name)"
            let info = try f.info(name)
            XCTAssertEqual(info.type, type, name)
            XCTAssertEqual(info.shape.count, 2)
            let ours = try f.tensor(name), expected = try f.tensor(name + ".expected")
            XCTAssertEqual(ours.shape, expected.shape, name)
            var worst: UInt32 = 0, differing = 0
            for (a, b) in zip(ours.buffer, expected.buffer) {
                let d = ulps(a, b)
                worst = max(worst, d)
                if d > 0 { differing += 1 }
            }
            XCTAssertLessThanOrEqual(worst, 1, "\(name) (\(f.string("rqat.source.\(type.name)") ?? "random")): \(differing) of \(ours.count) values differ, by up to \(worst) ulp")
            XCTAssertTrue(ours.buffer.contains { $0 != 0 }, name)
        }
    }

    /// Random bytes with finite fp16 scales: every code, scale and high-bit pattern occurs.
    func testRandomBlocksMatchGGUFPy() throws { try checkGroup("random") }

    /// Blocks as llama.cpp's quantizer writes them (Q2_K ... Q6_K, Q5_0, Q5_1, IQ4_NL files).
    func testLlamaCppQuantizedBlocksMatchGGUFPy() throws { try checkGroup("llama_cpp") }

    /// The packed form of a matrix holds the file's blocks with rows in Hugging Face order:
    /// for `llama` q/k the rows llama.cpp permuted move back as whole rows of blocks, for Qwen
    /// they stay; either way it dequantizes to the tensor the weights give.
    func testPackedMatrixKeepsBlocksInHuggingFaceRowOrder() throws {
        let f = try fixture()
        let raw = try f.withRawBytes("random.Q4_K") { Array($0) }   // 4 rows of 512
        for arch in ["llama", "qwen2"] {
            var b = GGUFBuilder()
            b.add("general.architecture", arch)
            b.add("\(arch).attention.head_count", u32: 1)
            b.add("\(arch).attention.head_count_kv", u32: 1)
            let q = try XCTUnwrap(DecoderArchitecture.ggufName(forName: DecoderArchitecture.name(.q, layer: 0)))
            b.tensor(q, dims: [512, 4], type: GGMLType.q4_K.rawValue, data: raw)
            let weights = try GGUFWeights(try GGUFFile(url: try scratchFile(self, b.build())))
            let name = DecoderArchitecture.name(.q, layer: 0)
            let packed = try weights.packed(name)
            XCTAssertEqual(packed.type, .q4_K)
            XCTAssertEqual(packed.shape, [4, 512])
            XCTAssertEqual(packed.bytesPerRow, 2 * 144)
            XCTAssertEqual(packed.dequantized().array, try weights.tensor(name).array, arch)
            // One head of 4 rows: llama.cpp stores Hugging Face rows 0, 1, 2, 3 at 0, 2, 1, 3.
            let rowBytes = packed.bytesPerRow
            for row in 0..<4 {
                let stored = arch == "llama" ? [0, 2, 1, 3][row] : row
                XCTAssertEqual(stored, arch == "llama" ? LlamaRowPermutation.ggufRow(ofRow: row, rows: 4, heads: 1) : row)
                XCTAssertEqual(Array(packed.bytes[row * rowBytes ..< (row + 1) * rowBytes]),
                               Array(raw[stored * rowBytes ..< (stored + 1) * rowBytes]), "\(arch) row \(row)")
            }
        }
    }

    /// Decoding splits a tensor across threads in chunks of whole blocks; a tensor several
    /// chunks long (and not a whole number of them) decodes as its blocks do one by one.
    func testLargeTensorDecodesLikeItsBlocks() throws {
        let f = try fixture()
        for type in Self.types {
            let (blockSize, blockBytes) = (type.blockSize!, type.blockBytes!)
            let one = try f.withRawBytes("random.\(type.name)") { Array($0) }
            let copies = 70_000 / one.count + 1
            var b = GGUFBuilder()
            let many = Array([[UInt8]](repeating: one, count: copies).joined())
            b.tensor("t", dims: [many.count / blockBytes * blockSize], type: type.rawValue, data: many)
            let big = try GGUFFile(url: try scratchFile(self, b.build())).tensor("t")
            let small = try f.tensor("random.\(type.name)")
            for c in [0, copies / 2, copies - 1] {
                XCTAssertEqual(Array(big.buffer[c * small.count ..< (c + 1) * small.count]), small.array, "\(type.name) copy \(c)")
            }
        }
    }
}
