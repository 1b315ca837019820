import pytest
import torch
import torch.nn.functional as F

from ser_ssl.eval import knn_accuracy, knn_predict


def clusters(n_per_class: int, num_classes: int = 4, dim: int = 16, noise: float = 0.1):
    centres = torch.eye(dim)[:num_classes]
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centres[y] + noise * torch.randn(len(y), dim), y


def test_well_separated_clusters_are_classified_perfectly():
    torch.manual_seed(0)
    bank, bank_y = clusters(50)
    query, query_y = clusters(20)
    assert knn_accuracy(query, query_y, bank, bank_y, num_classes=4, k=20) == {"acc": 1.0, "bal_acc": 1.0}


def test_random_labels_give_chance_accuracy():
    torch.manual_seed(0)
    bank, bank_y = torch.randn(2000, 16), torch.randint(0, 4, (2000,))
    query, query_y = torch.randn(2000, 16), torch.randint(0, 4, (2000,))
    result = knn_accuracy(query, query_y, bank, bank_y, num_classes=4)
    assert result["acc"] == pytest.approx(0.25, abs=0.04)
    assert result["bal_acc"] == pytest.approx(0.25, abs=0.04)


def test_scores_are_temperature_weighted_votes_of_the_nearest_neighbours():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[2.0, 1.0]])  # cosines 2/sqrt5, 1/sqrt5, -2/sqrt5
    sims = torch.tensor([2.0, 1.0]) / 5**0.5
    votes = (sims / 0.5).exp()
    scores = knn_predict(query, bank, labels, num_classes=3, k=2, temperature=0.5)
    assert torch.allclose(scores, torch.tensor([[votes[0], votes[1], 0.0]]) / votes.sum())
    all_three = knn_predict(query, bank, labels, num_classes=3, k=3, temperature=0.5)
    assert all_three[0, 1] > scores[0, 1]  # the third, opposite neighbour adds a small vote for class 1


def test_k_is_clamped_to_the_bank_and_chunks_do_not_change_the_result():
    torch.manual_seed(0)
    bank, bank_y = torch.randn(5, 8), torch.randint(0, 3, (5,))
    query = torch.randn(23, 8)
    scores = knn_predict(query, bank, bank_y, num_classes=3, k=200)
    assert scores.shape == (23, 3)
    assert torch.allclose(scores, knn_predict(query, bank, bank_y, num_classes=3, k=5))
    assert torch.allclose(scores, knn_predict(query, bank, bank_y, num_classes=3, k=200, chunk_size=4))
    assert torch.allclose(scores.sum(dim=1), torch.ones(23))


def test_small_temperatures_do_not_overflow():
    torch.manual_seed(0)
    bank, bank_y = F.normalize(torch.randn(100, 8), dim=1), torch.randint(0, 3, (100,))
    scores = knn_predict(-bank[:10], bank, bank_y, num_classes=3, k=50, temperature=1e-3)
    assert torch.isfinite(scores).all()


def test_balanced_accuracy_weighs_classes_equally():
    bank, bank_y = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    query = torch.tensor([[1.0, 0.1]]).expand(10, 2)
    query_y = torch.tensor([0] * 9 + [1])  # everything is predicted as class 0
    result = knn_accuracy(query, query_y, bank, bank_y, num_classes=2, k=1)
    assert result["acc"] == pytest.approx(0.9) and result["bal_acc"] == pytest.approx(0.5)


def test_bad_banks_are_refused():
    with pytest.raises(ValueError, match="empty"):
        knn_predict(torch.randn(2, 4), torch.randn(0, 4), torch.zeros(0, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="bank_labels"):
        knn_predict(torch.randn(2, 4), torch.randn(3, 4), torch.zeros(2, dtype=torch.long), 2)
