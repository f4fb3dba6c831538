import XCTest
@testable import Reasoning

final class ProblemTests: XCTestCase {
    func testProblemRecordUsesTheDocumentedKeys() throws {
        let p = Problem(id: "a-1", prompt: "Q", completion: "1 + 1 = 2\n#### 2", answer: "2")
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(p)) as! [String: Any]
        XCTAssertEqual(Set(json.keys), ["id", "prompt", "completion", "answer"])
        XCTAssertEqual(try JSONDecoder().decode(Problem.self, from: JSONEncoder().encode(p)), p)
    }
}
