"""Make the text-classifier example: a WordPiece tokenizer trained with `tokenizers` on local text (the
sentences below), saved as a real tokenizer.json, and a small bag-of-embeddings classifier in plain
torch trained on the same sentences, saved as TorchScript. The Bento ships the tokenizer.json (hashed)
and answers `{"inputs": {"text": "..."}}` with a named topic.

    python examples/text_classifier/train.py        # writes model.pt, tokenizer.json, labels.txt beside itself
    bento-compile build -f examples/text_classifier/bento.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

TOPICS = {
    "sports": ["the striker scored a late goal and the crowd roared", "our team won the final match on penalties",
               "the runner broke the world record in the marathon", "the coach praised the defence after the game",
               "she served an ace to win the tennis championship", "the league season starts with a derby match"],
    "weather": ["heavy rain and strong wind are expected tonight", "a sunny morning with clouds in the afternoon",
                "the forecast warns of snow on the mountain roads", "temperatures will drop below freezing overnight",
                "a storm brings thunder and lightning to the coast", "light showers clear to a warm dry evening"],
    "cooking": ["simmer the sauce gently and season with salt", "bake the bread until the crust is golden brown",
                "chop the onions and fry them in olive oil", "whisk the eggs with sugar for the sponge cake",
                "roast the vegetables with garlic and fresh herbs", "stir the risotto and add the stock slowly"],
}
LABELS = list(TOPICS)


def train_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=["[PAD]", "[UNK]"])
    tokenizer.train_from_iterator([s for sentences in TOPICS.values() for s in sentences], trainer)
    return tokenizer


def network(vocab: int, classes: int):
    import torch
    from torch import nn

    class BagOfEmbeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, 32)
            self.head = nn.Linear(32, classes)

        def forward(self, input_ids, attention_mask):
            mask = attention_mask.unsqueeze(-1).to(torch.float32)
            summed = (self.embed(input_ids) * mask).sum(dim=1)
            return self.head(summed / mask.sum(dim=1).clamp(min=1.0))

    torch.manual_seed(0)
    return BagOfEmbeddings()


def main(out: Path) -> None:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    tokenizer.save(str(out / "tokenizer.json"))
    texts = [s for sentences in TOPICS.values() for s in sentences]
    targets = torch.tensor([i for i, sentences in enumerate(TOPICS.values()) for _ in sentences])
    encoded = [tokenizer.encode(t).ids for t in texts]
    length = max(map(len, encoded))
    ids = torch.zeros(len(texts), length, dtype=torch.int64)
    mask = torch.zeros(len(texts), length, dtype=torch.int64)
    for row, tokens in enumerate(encoded):
        ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
    module = network(tokenizer.get_vocab_size(), len(LABELS))
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(ids, mask), targets)
        loss.backward()
        optimizer.step()
    module.eval()
    torch.jit.save(torch.jit.trace(module, (ids[:1], mask[:1])), str(out / "model.pt"))
    (out / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    print(f"wrote {out / 'model.pt'}, tokenizer.json ({tokenizer.get_vocab_size()} tokens), labels.txt; "
          f"training loss {loss.item():.4f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
