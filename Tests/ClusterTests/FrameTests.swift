import CKernels
import Cluster
import Tensors
import XCTest

private let allCodecs: [FrameCodec] = [.raw, .zstd(), .shuffledZstd()]

private func roundTrip(_ frames: [TensorFrame], _ codec: FrameCodec) throws -> [TensorFrame] {
    try TensorFrame.decodeMessage(TensorFrame.encodeMessage(frames, codec: codec), from: 0)
}

/// Values, shapes and kinds survive encoding and decoding under every codec.
final class FrameRoundTripTests: XCTestCase {
    /// Specials, a wide range of magnitudes and plain random values.
    private func testFloats(count: Int) -> [Float] {
        var rng = SeededRNG(seed: 1)
        let specials: [Float] = [0, -0.0, 1, -1, .infinity, -.infinity, .nan, 65504, 70000, 1e-8, -3.4e38,
                                 .leastNonzeroMagnitude, .greatestFiniteMagnitude]
        return specials + (specials.count..<count).map { _ in rng.normal() * 10 }
    }

    func testFloatsEveryDTypeAndCodec() throws {
        let values = testFloats(count: 600)
        let expected: [FrameDType: (Float) -> Float] = [
            .float32: { $0 },
            .float16: { Half.float(fromFP16: Half.fp16Bits($0)) },
            .bfloat16: { Half.float(fromBF16: Half.bf16Bits($0)) },
        ]
        for (dtype, convert) in expected {
            for codec in allCodecs {
                let frame = TensorFrame(kind: 7, floats: values, as: dtype, shape: [20, 30])
                let decoded = try roundTrip([frame], codec)
                XCTAssertEqual(decoded, [frame], "\(dtype) \(codec)")
                // Bit patterns, so NaN and -0 count too.
                XCTAssertEqual(decoded[0].floats().map(\.bitPattern), values.map { convert($0).bitPattern }, "\(dtype) \(codec)")
                XCTAssertEqual(decoded[0].shape, [20, 30])
                XCTAssertEqual(decoded[0].kind, 7)
            }
        }
    }

    func testTensorRoundTrip() throws {
        let tensor = Tensor(shape: [3, 4], values: (0..<12).map { Float($0) * 0.25 })
        let decoded = try roundTrip([TensorFrame(kind: 1, tensor: tensor, as: .bfloat16)], .shuffledZstd())[0].tensor()
        XCTAssertEqual(decoded.shape, [3, 4])
        XCTAssertEqual(decoded.array, tensor.array)   // quarters are exact in bf16
    }

    func testIntegersEveryDTypeAndCodec() throws {
        var rng = SeededRNG(seed: 2)
        let cases: [(FrameDType, ClosedRange<Int32>, [Int32])] = [
            (.int32, Int32.min...Int32.max, [Int32.min, -1, 0, Int32.max]),
            (.uint32, 0...Int32.max, [0, 65536, Int32.max]),
            (.uint16, 0...65535, [0, 1, 65535]),
            (.uint8, 0...255, [0, 255]),
        ]
        for (dtype, range, edges) in cases {
            let values = edges + (0..<500).map { _ in Int32.random(in: range, using: &rng) }
            for codec in allCodecs {
                let frame = TensorFrame(kind: 3, ints: values, as: dtype, shape: [values.count])
                XCTAssertEqual(try roundTrip([frame], codec)[0].ints(), values, "\(dtype) \(codec)")
            }
        }
    }

    func testIntArraysAsTheTokenizerReturnsThem() throws {
        let frame = TensorFrame(kind: 0, ints: [0, 5, 151_935] as [Int], as: .tokenIds(vocabSize: 151_936), shape: [3])
        XCTAssertEqual(frame.dtype, .uint32)
        XCTAssertEqual(try roundTrip([frame], .raw)[0].ints(), [0, 5, 151_935])
    }

    func testPackedCodesEveryWidth() throws {
        var rng = SeededRNG(seed: 3)
        for bits in 1...8 {
            for count in [0, 1, 7, 13, 1000] {
                let codes = (0..<count).map { _ in UInt8.random(in: 0...UInt8((1 << bits) - 1), using: &rng) }
                let frame = TensorFrame(kind: 9, codes: codes, bits: bits, shape: [count])
                XCTAssertEqual(frame.payload.count, (count * bits + 7) / 8, "bits \(bits) count \(count)")
                for codec in allCodecs {
                    let decoded = try roundTrip([frame], codec)[0]
                    XCTAssertEqual(decoded.dtype, .packed(bits: bits))
                    XCTAssertEqual(decoded.codes(), codes, "bits \(bits) count \(count) \(codec)")
                }
            }
        }
    }

    /// The documented bit order: value i in bits i*b ..< (i+1)*b, least significant first.
    func testPackedBitOrder() {
        // 3-bit codes 1, 2, 3, 7: 001 | 010 << 3 | 011 << 6 | 111 << 9 = 0b1110_1101_0001.
        XCTAssertEqual(TensorFrame(kind: 0, codes: [1, 2, 3, 7], bits: 3, shape: [4]).payload, [0xD1, 0x0E])
    }

    /// The frames the teacher sends for top-k distillation, plus a scalar and an empty frame.
    func testSeveralFramesPerMessage() throws {
        var rng = SeededRNG(seed: 4)
        let rows = 6, k = 4
        let frames = [
            TensorFrame(kind: 1, ints: (0..<rows * k).map { _ in Int32.random(in: 0..<49_152, using: &rng) },
                        as: .tokenIds(vocabSize: 49_152), shape: [rows, k]),
            TensorFrame(kind: 2, floats: (0..<rows * k).map { _ in -rng.uniform() * 8 }, as: .float16, shape: [rows, k]),
            TensorFrame(kind: 3, floats: (0..<rows).map { _ in rng.uniform() * 0.1 }, as: .float32, shape: [rows]),
            TensorFrame(kind: 4, ints: [42], as: .int32, shape: []),
            TensorFrame(kind: 5, ints: [Int32](), as: .uint8, shape: [0, 3]),
        ]
        for codec in allCodecs { XCTAssertEqual(try roundTrip(frames, codec), frames, "\(codec)") }
        XCTAssertEqual(try roundTrip([], .zstd()), [])
    }

    func testTokenIdTypeAndRangeChecks() {
        XCTAssertEqual(FrameDType.tokenIds(vocabSize: 49_152), .uint16)
        XCTAssertEqual(FrameDType.tokenIds(vocabSize: 65_536), .uint16)
        XCTAssertEqual(FrameDType.tokenIds(vocabSize: 65_537), .uint32)
        XCTAssertNoThrow(try FrameDType.uint16.checkFits([0, 65_535]))
        XCTAssertThrowsError(try FrameDType.uint16.checkFits([3, 65_536])) { error in
            XCTAssertTrue("\(error)".contains("65536"), "\(error)")
        }
        XCTAssertThrowsError(try FrameDType.uint32.checkFits([-1]))
        XCTAssertThrowsError(try FrameDType.uint8.checkFits([256]))
        XCTAssertThrowsError(try FrameDType.packed(bits: 3).checkFits([8]))
        XCTAssertThrowsError(try FrameDType.float16.checkFits([1]))
    }
}

/// Byte planes are what make teacher log-probabilities compress.
final class FrameCompressionTests: XCTestCase {
    func testShuffledZstdBeatsZstdOnTopKLogProbs() {
        var rng = SeededRNG(seed: 5)
        let rows = 128, vocab = 2048, k = 64
        var logProbs: [Float] = []
        for _ in 0..<rows {
            let logits = (0..<vocab).map { _ in rng.normal() * 3 }
            let maxLogit = logits.max()!
            let logZ = maxLogit + log(logits.reduce(0) { $0 + exp($1 - maxLogit) })
            logProbs += logits.sorted(by: >).prefix(k).map { $0 - logZ }
        }
        let frame = TensorFrame(kind: 0, floats: logProbs, as: .float16, shape: [rows, k])
        let raw = TensorFrame.encodedSize([frame], codec: .raw)
        let plain = TensorFrame.encodedSize([frame], codec: .zstd())
        let shuffled = TensorFrame.encodedSize([frame], codec: .shuffledZstd())
        XCTAssertLessThan(shuffled, plain, "raw \(raw), zstd \(plain), shuffled zstd \(shuffled)")
        XCTAssertLessThan(plain, raw)
    }

    func testIncompressiblePayloadTravelsRaw() throws {
        var rng = SeededRNG(seed: 6)
        let frame = TensorFrame(kind: 0, codes: (0..<64).map { _ in UInt8.random(in: 0...255, using: &rng) }, bits: 8, shape: [64])
        let message = TensorFrame.encodeMessage([frame], codec: .zstd())
        XCTAssertEqual(message.count, TensorFrame.encodedSize([frame], codec: .raw))
        XCTAssertEqual(try TensorFrame.decodeMessage(message, from: 0), [frame])
    }
}

/// The byte layout of docs/WIRE.md, field by field.
final class FrameLayoutTests: XCTestCase {
    func testHeaderBytes() {
        let frame = TensorFrame(kind: 0x0102, ints: [10, 20, 30] as [Int32], as: .uint8, shape: [3])
        let m = TensorFrame.encodeMessage([frame], codec: .raw)
        func u16(_ o: Int) -> Int { Int(m[o]) | Int(m[o + 1]) << 8 }
        func u64(_ o: Int) -> Int { (0..<8).reduce(0) { $0 | Int(m[o + $1]) << (8 * $1) } }
        XCTAssertEqual(m.count, 20 + 32 + 8 + 3)
        XCTAssertEqual(Array(m[0..<4]), Array("RQAM".utf8))
        XCTAssertEqual(u16(4), 1)              // format version
        XCTAssertEqual(u16(6), 1)              // frame count
        XCTAssertEqual(u64(8), m.count)        // message size
        XCTAssertEqual(Array(m[20..<24]), Array("RQAF".utf8))
        XCTAssertEqual(u16(24), 1)             // format version
        XCTAssertEqual(u16(26), 0x0102)        // kind
        XCTAssertEqual(Array(m[28..<32]), [5, 0, 0, 1])   // dtype uint8, bits, codec raw, rank
        XCTAssertEqual(u64(36), 3)             // payload bytes
        XCTAssertEqual(u64(44), 3)             // encoded bytes
        XCTAssertEqual(u64(52), 3)             // shape[0]
        XCTAssertEqual(Array(m[60...]), [10, 20, 30])
    }
}

/// Corrupt, truncated and foreign messages give a FrameError naming the sender, never a crash
/// and never frames.
final class FrameErrorTests: XCTestCase {
    /// Three frames whose payloads compress, so every codec's decoding path is exercised.
    private let frames = [
        TensorFrame(kind: 1, ints: (0..<24).map { Int32($0 % 5) }, as: .uint16, shape: [4, 6]),
        TensorFrame(kind: 2, floats: (0..<32).map { -Float($0 % 4) * 0.5 }, as: .float16, shape: [32]),
        TensorFrame(kind: 3, codes: [UInt8](repeating: 2, count: 40), bits: 2, shape: [40]),
    ]

    private func assertFrameError(_ bytes: [UInt8], rank: Int, _ context: String,
                                  file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try TensorFrame.decodeMessage(bytes, from: rank), context, file: file, line: line) { error in
            guard let frameError = error as? FrameError else {
                return XCTFail("\(context): not a FrameError: \(error)", file: file, line: line)
            }
            XCTAssertEqual(frameError.rank, rank, context, file: file, line: line)
            XCTAssertTrue(frameError.description.hasPrefix("frame from rank \(rank): "), frameError.description,
                          file: file, line: line)
        }
    }

    func testCorruptingAnyByteIsCaught() {
        for codec in allCodecs {
            let message = TensorFrame.encodeMessage(frames, codec: codec)
            for position in message.indices {
                for flip: UInt8 in [0x01, 0x80, 0xFF] {
                    var corrupt = message
                    corrupt[position] ^= flip
                    assertFrameError(corrupt, rank: 2, "\(codec) byte \(position) ^ \(flip)")
                }
            }
        }
    }

    func testCorruptPayloadIsReportedAsChecksumMismatch() {
        var message = TensorFrame.encodeMessage(frames, codec: .zstd())
        message[message.count - 2] ^= 0x10
        XCTAssertThrowsError(try TensorFrame.decodeMessage(message, from: 2)) { error in
            XCTAssertTrue("\(error)".contains("frame from rank 2: checksum mismatch in frame 3 of 3"), "\(error)")
        }
    }

    func testTruncationAtEveryLength() {
        for codec in allCodecs {
            let message = TensorFrame.encodeMessage(frames, codec: codec)
            for length in 0..<message.count {
                assertFrameError(Array(message[..<length]), rank: 5, "\(codec) cut to \(length) bytes")
            }
        }
        XCTAssertThrowsError(try TensorFrame.decodeMessage(Array(TensorFrame.encodeMessage(frames, codec: .raw).dropLast()), from: 5)) {
            XCTAssertTrue("\($0)".contains("truncated"), "\($0)")
        }
    }

    func testTrailingBytesAreRefused() {
        assertFrameError(TensorFrame.encodeMessage(frames, codec: .raw) + [0], rank: 1, "one byte too many")
    }

    func testForeignBytesAreBadMagic() {
        XCTAssertThrowsError(try TensorFrame.decodeMessage(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), from: 3)) {
            XCTAssertTrue("\($0)".contains("bad magic"), "\($0)")
        }
    }

    // The checks after the checksum catch frames a sender built wrongly (a different build or a
    // bug); to reach them a test edits a header and re-seals it with a valid checksum.

    /// The message's first frame starts after the 20-byte message header.
    private let frameStart = 20

    private func resealFirstFrame(_ message: inout [UInt8]) {
        let checksumOffset = frameStart + 12
        let head = message.withUnsafeBytes { rqat_crc32c(0, $0.baseAddress! + frameStart, 12) }
        let crc = message.withUnsafeBytes { rqat_crc32c(head, $0.baseAddress! + checksumOffset + 4, message.count - checksumOffset - 4) }
        for i in 0..<4 { message[checksumOffset + i] = UInt8(truncatingIfNeeded: crc >> (8 * i)) }
    }

    private func storeU64(_ value: Int, at offset: Int, in message: inout [UInt8]) {
        for i in 0..<8 { message[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }

    func testUnknownDTypeAndCodec() {
        let message = TensorFrame.encodeMessage([frames[0]], codec: .raw)
        var badDType = message
        badDType[frameStart + 8] = 17
        resealFirstFrame(&badDType)
        XCTAssertThrowsError(try TensorFrame.decodeMessage(badDType, from: 4)) {
            XCTAssertTrue("\($0)".contains("frame from rank 4: unknown dtype 17"), "\($0)")
        }
        var badCodec = message
        badCodec[frameStart + 10] = 9
        resealFirstFrame(&badCodec)
        XCTAssertThrowsError(try TensorFrame.decodeMessage(badCodec, from: 4)) {
            XCTAssertTrue("\($0)".contains("unknown codec 9"), "\($0)")
        }
    }

    func testDecompressedSizeDiffersFromHeader() {
        let frame = TensorFrame(kind: 0, floats: [Float](repeating: 1, count: 1000), shape: [1000])
        var message = TensorFrame.encodeMessage([frame], codec: .zstd())
        XCTAssertEqual(message[frameStart + 10], 1, "the payload should have been compressed")
        // Claim one float more than the zstd data holds, consistently in shape and size.
        storeU64(4004, at: frameStart + 16, in: &message)
        storeU64(1001, at: frameStart + 32, in: &message)
        resealFirstFrame(&message)
        XCTAssertThrowsError(try TensorFrame.decodeMessage(message, from: 6)) {
            XCTAssertTrue("\($0)".contains("frame from rank 6: decompressed size differs from header"), "\($0)")
        }
    }

    func testNewerFormatVersionIsNamed() {
        var message = TensorFrame.encodeMessage(frames, codec: .raw)
        message[4] = 2
        XCTAssertThrowsError(try TensorFrame.decodeMessage(message, from: 1)) {
            XCTAssertTrue("\($0)".contains("format version 2") && "\($0)".contains("mixed versions"), "\($0)")
        }
    }
}

/// The CRC-32C kernel: the standard check value, and the SSE4.2 and table versions agree.
final class FrameChecksumTests: XCTestCase {
    func testCheckValue() {
        let check = Array("123456789".utf8)
        XCTAssertEqual(rqat_crc32c(0, check, check.count), 0xE306_9283)
        XCTAssertEqual(rqat_crc32c_portable(0, check, check.count), 0xE306_9283)
        XCTAssertEqual(rqat_crc32c(0, nil, 0), 0)
    }

    func testHardwareAndTableAgreeOnEveryLengthAndAlignment() {
        var rng = SeededRNG(seed: 7)
        let data = (0..<300).map { _ in UInt8.random(in: 0...255, using: &rng) }
        data.withUnsafeBytes { bytes in
            for start in 0..<9 {
                for length in 0..<(bytes.count - start) {
                    let p = bytes.baseAddress! + start
                    XCTAssertEqual(rqat_crc32c(0, p, length), rqat_crc32c_portable(0, p, length), "start \(start) length \(length)")
                }
            }
            // Continuing from a previous result equals one pass over both parts.
            let whole = rqat_crc32c(0, bytes.baseAddress, bytes.count)
            XCTAssertEqual(rqat_crc32c(rqat_crc32c(0, bytes.baseAddress, 101), bytes.baseAddress! + 101, bytes.count - 101), whole)
            XCTAssertEqual(rqat_crc32c_portable(rqat_crc32c_portable(0, bytes.baseAddress, 13), bytes.baseAddress! + 13, bytes.count - 13), whole)
        }
        print("CRC-32C on SSE4.2: \(rqat_crc32c_is_hardware() == 1)")
    }
}
