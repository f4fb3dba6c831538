import Foundation
import Tensors

/// Where a student's teacher signal comes from: a teacher in the same process, or teacher ranks
/// over MPI (Cluster's `LocalTeacherLink` and `RemoteTeacherLink`).
package protocol TeacherLink: AnyObject {
    /// Asks for the teacher's signal at the trained positions of micro-batch `id`.
    func submit(_ batch: SFTBatch, id: Int) throws
    /// The signal for a submitted batch (blocks until it is there).
    func signal(batchId: Int, rows: Int) throws -> TeacherSignal
    /// Seconds spent waiting for teachers, and the bytes received.
    var waitSeconds: Double { get }
    var bytesReceived: Int { get }
    /// Tells the teachers this student is finished.
    func close() throws
}

/// Knowledge distillation as a training objective: each micro-batch is sent to the teacher
/// when it is drawn (`lookahead` micro-batches before it is trained on), and its loss is the
/// divergence of `lossOptions` (forward KL unless told otherwise) to the teacher's signal at the
/// completion positions (where the loss mask is > 0).
package final class KDObjective: TrainingObjective {
    package let link: TeacherLink
    package let lossOptions: KDLoss.Options
    package let lookahead: Int

    package init(link: TeacherLink, lossOptions: KDLoss.Options, lookahead: Int) {
        self.link = link
        self.lossOptions = lossOptions
        self.lookahead = lookahead
    }

    package func prepare(_ batch: SFTBatch, id: Int) throws {
        try link.submit(batch, id: id)
    }

    package func lossAndGradient(_ batch: SFTBatch, id: Int, logits: Tensor, vocab v: Int, normalizer: Double) throws -> Double {
        let positions = batch.lossMask.indices.filter { batch.lossMask[$0] > 0 }
        let signal = try link.signal(batchId: id, rows: positions.count)
        // The loss runs on the trained positions only, gathered into (M, V); the gradient of
        // every other position is zero.
        let student = logits.gatherRows(positions)
        let loss = signal.kdLoss(student: student.ptr, vocab: v, weights: positions.map { batch.lossMask[$0] },
                                 normalizer: normalizer, options: lossOptions, gradient: true)
        logits.fill(0)
        for (i, p) in positions.enumerated() { logits.row(p).update(from: student.row(i), count: v) }
        return loss
    }
}
