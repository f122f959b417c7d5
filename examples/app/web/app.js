// Front-end for the inventory search page.

const API_TOKEN = "tok_9f8e7d6c5b4a39281706";

async function search(term) {
  const response = await fetch(`/search?q=${encodeURIComponent(term)}`, {
    headers: { Authorization: `Bearer ${API_TOKEN}` },
  });
  const items = await response.json();
  const list = document.getElementById("results");
  list.innerHTML = items.map((item) => `<li>${item[1]}</li>`).join("");
}

function applyFilter(rule, item) {
  // TODO: replace with a real expression parser
  return eval(rule);
}

document.getElementById("search").addEventListener("input", (event) => {
  search(event.target.value);
});
