import Foundation
import XCTest
import Tensors
import TestSupport
@testable import Formats

final class SafeTensorsTests: XCTestCase {
    /// A file with the given JSON header and `dataBytes` zero bytes of data.
    func handWritten(header: String, dataBytes: Int, declaredLength: UInt64? = nil) throws -> URL {
        var bytes = GGUFBuilder.le(declaredLength ?? UInt64(header.utf8.count)) + Array(header.utf8)
        bytes += [UInt8](repeating: 0, count: dataBytes)
        return try scratchFile(self, Data(bytes), name: "model.safetensors")
    }

    func testRoundTripF32F16BF16() throws {
        let values: [Float] = (0..<24).map { Float($0) * 0.37 - 4 }
        let t = Tensor(shape: [2, 3, 4], values: values)
        let v = Tensor(shape: [5], values: [1, -2, 0.5, 1e-3, 65504])
        let dir = try scratchFile(self, Data()).deletingLastPathComponent()
        let url = dir.appendingPathComponent("out.safetensors")
        try SafeTensorsWriter.write([("a/f32", t, .F32), ("b.f16", t, .F16), ("c.bf16", t, .BF16), ("v", v, .F16)],
                                    metadata: ["format": "pt", "note": "quote \" and slash /"], to: url)

        // The header length is a multiple of 8 and no temporary file is left behind.
        let raw = try Data(contentsOf: url)
        XCTAssertEqual(raw.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } % 8, 0)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), ["model.gguf", "out.safetensors"])

        let f = try SafeTensorsFile(url: url)
        XCTAssertEqual(f.tensorNames, ["a/f32", "b.f16", "c.bf16", "v"])
        XCTAssertEqual(f.metadata, ["format": "pt", "note": "quote \" and slash /"])
        XCTAssertEqual(try f.info("b.f16").dtype, .F16)
        XCTAssertEqual(try f.info("c.bf16").shape, [2, 3, 4])
        XCTAssertEqual(try f.tensor("a/f32").array, values)
        XCTAssertEqual(try f.tensor("b.f16").array, values.map { Half.float(fromFP16: Half.fp16Bits($0)) })
        XCTAssertEqual(try f.tensor("c.bf16").array, values.map { Half.float(fromBF16: Half.bf16Bits($0)) })
        XCTAssertEqual(try f.tensor("v").array, [1, -2, 0.5, Half.float(fromFP16: Half.fp16Bits(1e-3)), 65504])
        XCTAssertEqual(try f.tensor("c.bf16").shape, [2, 3, 4])
        expectFormatError(try f.tensor("missing"), contains: [url.path, "missing"])

        // Overwriting replaces the file.
        try SafeTensorsWriter.write([("x", v, .F32)], metadata: [:], to: url)
        XCTAssertEqual(try SafeTensorsFile(url: url).tensorNames, ["x"])
    }

    func testOutOfRangeOffsetNamesFile() throws {
        let url = try handWritten(header: #"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]}}"#, dataBytes: 16)
        expectFormatError(try SafeTensorsFile(url: url), contains: [url.path, "w", "truncated"])
    }

    func testHeaderLengthBeyondFileNamesFile() throws {
        let url = try handWritten(header: #"{}"#, dataBytes: 0, declaredLength: 1 << 40)
        expectFormatError(try SafeTensorsFile(url: url), contains: [url.path, "header length"])
        let tiny = try scratchFile(self, Data([1, 2, 3]), name: "tiny.safetensors")
        expectFormatError(try SafeTensorsFile(url: tiny), contains: [tiny.path, "truncated"])
    }

    func testInconsistentHeadersAreRejected() throws {
        let cases: [(String, Int, [String])] = [
            (#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8, ["w", "needs 12 bytes"]),
            (#"{"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}}"#, 2, ["w", "unknown dtype Q4"]),
            (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, 12, ["overlap"]),
            (#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, 4, ["w", "shape"]),
            (#"not json"#, 0, ["JSON"]),
            (#"{"__metadata__":{"n":3}}"#, 0, ["__metadata__"]),
        ]
        for (header, dataBytes, fragments) in cases {
            let url = try handWritten(header: header, dataBytes: dataBytes)
            expectFormatError(try SafeTensorsFile(url: url), contains: [url.path] + fragments)
        }
    }

    func testIntegerTensorsListButDoNotDecode() throws {
        let url = try handWritten(header: #"{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#, dataBytes: 16)
        let f = try SafeTensorsFile(url: url)
        XCTAssertEqual(try f.info("ids").dtype, .I64)
        expectFormatError(try f.tensor("ids"), contains: ["ids", "I64"])
    }

    func testShardedDirectory() throws {
        let dir = try scratchFile(self, Data()).deletingLastPathComponent()
        let a = Tensor(shape: [2], values: [1, 2]), b = Tensor(shape: [1, 3], values: [3, 4, 5])
        try SafeTensorsWriter.write([("a", a, .F32)], metadata: [:], to: dir.appendingPathComponent("model-00001-of-00002.safetensors"))
        try SafeTensorsWriter.write([("b", b, .BF16)], metadata: [:], to: dir.appendingPathComponent("model-00002-of-00002.safetensors"))
        let index = #"{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#
        try Data(index.utf8).write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        let w = try SafeTensorsWeights(directory: dir)
        XCTAssertEqual(w.names, ["a", "b"])
        XCTAssertEqual(w.shape("b"), [1, 3])
        XCTAssertEqual(try w.tensor("b").array, [3, 4, 5])
        XCTAssertFalse(w.has("c"))

        // An index naming a tensor no shard holds is caught at open.
        let bad = #"{"weight_map":{"a":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}}"#
        try Data(bad.utf8).write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        expectFormatError(try SafeTensorsWeights(directory: dir), contains: ["model-00002-of-00002.safetensors", "missing tensor c"])
    }
}
