import Foundation
@testable import Jobs
import TestSupport
import XCTest

/// The text inputs of generate, ppl and ptq: lines, or a string field of every JSONL line.
final class TextRecordsTests: XCTestCase {
    func testLinesOrAFieldOfEveryJSONLLine() throws {
        let dir = try makeScratchDirectory("rqat-text-records")
        let txt = dir.appendingPathComponent("prompts.txt"), jsonl = dir.appendingPathComponent("prompts.jsonl")
        try "What is 2+2?\n\nName a prime.\n".write(to: txt, atomically: true, encoding: .utf8)
        XCTAssertEqual(try GenerationJob.readPrompts(txt.path), ["What is 2+2?", "Name a prime."])
        try #"{"prompt": "a", "n": 1}"# .appending("\n" + #"{"prompt": "b \"quoted\""}"#).write(to: jsonl, atomically: true, encoding: .utf8)
        XCTAssertEqual(try GenerationJob.readPrompts(jsonl.path), ["a", "b \"quoted\""])

        try (#"{"prompt": "a"}"# + "\n" + #"{"text": "b"}"#).write(to: jsonl, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try GenerationJob.readPrompts(jsonl.path)) { error in
            XCTAssertEqual("\(error)".contains(jsonl.path) && "\(error)".contains("line 2") && "\(error)".contains("\"prompt\""), true, "\(error)")
        }
        XCTAssertThrowsError(try TextRecords.read(dir.appendingPathComponent("none.txt").path, field: "text", what: "prompts file")) { error in
            XCTAssertTrue("\(error)".contains("cannot read the prompts file"), "\(error)")
        }
    }
}
