import Foundation
import Formats
@testable import Jobs
import TestSupport
import XCTest

/// PTQ calibration text cut into windows, on the tiny BPE tokenizer of the fixtures.
final class CalibrationTests: XCTestCase {
    var tokenizer: BPETokenizer!
    var dir: URL!

    override func setUpWithError() throws {
        tokenizer = try BPETokenizer(tokenizerJSON: TestPaths.fixture("tiny-tokenizer/tokenizer.json"))
        dir = try makeScratchDirectory("rqat-calibration")
    }

    let lines = (0..<12).map { "Line \($0): natalia sold \(40 + $0) clips in april and half as many in may." }

    /// The stream the windows are cut from: every line's tokens, then EOS.
    func stream(_ lines: [String]) -> [Int] {
        lines.flatMap { tokenizer.encode($0) + (tokenizer.eosTokenId.map { [$0] } ?? []) }
    }

    func testWindowsAreConsecutiveSlicesOfTheTokenStream() throws {
        let file = dir.appendingPathComponent("calib.txt")
        try lines.joined(separator: "\n").write(to: file, atomically: true, encoding: .utf8)
        let all = stream(lines)
        let seqLen = 40
        XCTAssertGreaterThan(all.count, 3 * seqLen, "the text must fill several windows")

        let windows = try CalibrationText.windows(path: file.path, tokenizer: tokenizer, seqLen: seqLen, samples: 1000)
        XCTAssertEqual(windows.flatMap { $0 }, Array(all.prefix(windows.flatMap { $0 }.count)))
        XCTAssertTrue(windows.dropLast().allSatisfy { $0.count == seqLen })
        // The tail window is kept when it has at least 16 tokens, dropped otherwise.
        let tail = all.count % seqLen
        XCTAssertEqual(windows.count, all.count / seqLen + (tail >= CalibrationText.minimumWindow ? 1 : 0))
        if let eos = tokenizer.eosTokenId { XCTAssertTrue(windows.flatMap { $0 }.contains(eos)) }

        // At most `samples` windows, all full.
        let two = try CalibrationText.windows(path: file.path, tokenizer: tokenizer, seqLen: seqLen, samples: 2)
        XCTAssertEqual(two, [Array(all[0..<seqLen]), Array(all[seqLen..<2 * seqLen])])
    }

    func testJSONLReadsTheTextFieldAndNamesABadLine() throws {
        let file = dir.appendingPathComponent("calib.jsonl")
        let records = lines.prefix(4).map { String(decoding: try! JSONSerialization.data(withJSONObject: ["text": $0]), as: UTF8.self) }
        try records.joined(separator: "\n").write(to: file, atomically: true, encoding: .utf8)
        let windows = try CalibrationText.windows(path: file.path, tokenizer: tokenizer, seqLen: 10_000, samples: 8)
        XCTAssertEqual(windows, [stream(Array(lines.prefix(4)))])

        try (records + [#"{"prompt": "no text"}"#]).joined(separator: "\n").write(to: file, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try CalibrationText.windows(path: file.path, tokenizer: tokenizer, seqLen: 16, samples: 1000)) { error in
            XCTAssertTrue("\(error)".contains(file.path), "\(error)")
            XCTAssertTrue("\(error)".contains("line 5"), "\(error)")
        }
    }

    func testTooLittleTextGivesNoWindowAndAnUnreadableFileIsNamed() throws {
        let file = dir.appendingPathComponent("short.txt")
        try "hi".write(to: file, atomically: true, encoding: .utf8)
        XCTAssertEqual(try CalibrationText.windows(path: file.path, tokenizer: tokenizer, seqLen: 64, samples: 4), [])
        let missing = dir.appendingPathComponent("missing.txt").path
        XCTAssertThrowsError(try CalibrationText.windows(path: missing, tokenizer: tokenizer, seqLen: 64, samples: 4)) { error in
            XCTAssertTrue("\(error)".contains(missing), "\(error)")
        }
    }
}
